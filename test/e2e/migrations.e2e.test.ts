import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MIGRATIONS } from '../../migrations';
import { MIGRATIONS_TABLE } from '../../src/common/db/data-source';
import { call } from '../support/http';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { runTraceToExit, startTrace } from '../support/trace-process';

const run = promisify(execFile);

async function appliedMigrations(databaseUrl: string): Promise<string[]> {
  const db = await connect(databaseUrl);
  try {
    const { rows } = await db.query(`SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY id`);
    return rows.map((r: { name: string }) => r.name);
  } finally {
    await db.end();
  }
}

describe('migrations', () => {
  it('two processes started at once against one empty database both come up; migrations run once', async () => {
    const databaseUrl = await createTestDatabase('race');
    const [a, b] = await Promise.all([
      startTrace({ args: ['--role', 'registry'], env: { DATABASE_URL: databaseUrl } }),
      startTrace({ args: ['--role', 'dispatcher'], env: { DATABASE_URL: databaseUrl } }),
    ]);
    try {
      expect((await call(a.baseUrl, 'GET', '/health')).status).toBe(200);
      expect((await call(b.baseUrl, 'GET', '/health')).status).toBe(200);
      expect(await appliedMigrations(databaseUrl)).toEqual(MIGRATIONS.map((m) => m.name));
      // Exactly one of the two applied them; the other found the schema current.
      const appliedBy = [a, b].map((p) => p.logs.find((l) => l.context === 'Migrations')?.applied as string[]);
      expect(appliedBy.map((names) => names.length).sort()).toEqual([0, MIGRATIONS.length]);
    } finally {
      expect(await a.stop()).toBe(0);
      expect(await b.stop()).toBe(0);
    }
  });

  it('npm run migrate applies pending migrations, and a second run finds none', async () => {
    const databaseUrl = await createTestDatabase('cli');
    const migrate = () =>
      run(process.execPath, [join(__dirname, '..', '..', 'dist', 'src', 'cli', 'migrate.js')], {
        env: { PATH: process.env.PATH, DATABASE_URL: databaseUrl },
      });
    const first = await migrate();
    expect(first.stdout).toContain('"msg":"applied migrations"');
    expect(await appliedMigrations(databaseUrl)).toEqual(MIGRATIONS.map((m) => m.name));
    const second = await migrate();
    expect(second.stdout).toContain('"msg":"schema is up to date"');
  });

  it('TRACE_RUN_MIGRATIONS=false refuses to start on a schema that is behind, and changes nothing', async () => {
    const databaseUrl = await createTestDatabase('nomig');
    const res = await runTraceToExit({ args: ['--role', 'query'], env: { DATABASE_URL: databaseUrl, TRACE_RUN_MIGRATIONS: 'false' } });
    expect(res.code).toBe(1);
    expect(res.stdout).toContain('schema is behind this binary; run `npm run migrate`');
    expect(await appliedMigrations(databaseUrl)).toEqual([]);
    const db = await connect(databaseUrl);
    try {
      const { rows } = await db.query(`SELECT to_regclass('nodes') AS t`);
      expect(rows[0].t).toBeNull();
    } finally {
      await db.end();
    }
  });
});
