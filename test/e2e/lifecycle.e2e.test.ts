import { randomUUID } from 'node:crypto';
import { call } from '../support/http';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { runTraceToExit, startTrace } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

describe('process lifecycle', () => {
  it('health is 200 while the database answers and 503 while it does not', async () => {
    const databaseUrl = await createTestDatabase('health');
    const name = new URL(databaseUrl).pathname.slice(1);
    const p = await startTrace({ args: ['--role', 'query'], env: { DATABASE_URL: databaseUrl } });
    const admin = await connect(databaseUrl.replace(`/${name}?`, '/postgres?'));
    try {
      expect((await call(p.baseUrl, 'GET', '/health')).status).toBe(200);
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, [name]);
      const down = await waitFor(async () => {
        const res = await call(p.baseUrl, 'GET', '/health');
        return res.status === 503 ? res : undefined;
      }, 'health to report the database down');
      expect(down.body).toMatchObject({ status: 'unavailable', database: 'down', roles: ['query'] });

      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
      await waitFor(async () => (await call(p.baseUrl, 'GET', '/health')).status === 200, 'health to recover');
    } finally {
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
      await admin.end();
      expect(await p.stop()).toBe(0);
    }
  });

  it('each process heartbeats its row in nodes, removes it when it drains, and the dispatcher reaps dead ones', async () => {
    const databaseUrl = await createTestDatabase('nodes');
    const db = await connect(databaseUrl);
    const p = await startTrace({ args: ['--role', 'dispatcher'], env: { DATABASE_URL: databaseUrl, TRACE_NODE_EXPIRY_MS: '2000' } });
    try {
      const nodeId = (await call(p.baseUrl, 'GET', '/health')).body.node_id as string;
      await waitFor(async () => (await db.query('SELECT 1 FROM nodes WHERE id = $1', [nodeId])).rowCount === 1, 'the node row');

      // A process that died without draining: its heartbeat is old.
      const dead = randomUUID();
      await db.query(`INSERT INTO nodes (id, roles, hostname, pid, heartbeat_at) VALUES ($1, '{wrapper}', 'gone', 1, now() - interval '1 minute')`, [dead]);
      await waitFor(async () => (await db.query('SELECT 1 FROM nodes WHERE id = $1', [dead])).rowCount === 0, 'the reaper to remove the dead node');
      expect((await db.query('SELECT 1 FROM nodes WHERE id = $1', [nodeId])).rowCount).toBe(1);

      expect(await p.stop('SIGTERM')).toBe(0);
      expect((await db.query('SELECT count(*)::int AS n FROM nodes')).rows[0].n).toBe(0);
    } finally {
      await p.stop();
      await db.end();
    }
  });

  it('invalid configuration lists every violation and exits 2 before touching anything', async () => {
    const res = await runTraceToExit({
      env: { PORT: 'eighty', LOG_LEVEL: 'loud', DATABASE_URL: 'mysql://nope', TRACE_HEARTBEAT_INTERVAL_MS: '5' },
    });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('Invalid configuration:');
    for (const field of ['PORT:', 'LOG_LEVEL:', 'DATABASE_URL:', 'TRACE_HEARTBEAT_INTERVAL_MS:']) expect(res.stderr).toContain(field);
    expect(res.stdout).toBe('');
  });

  it('an unreachable external database fails start-up with exit 1 and a clear log line', async () => {
    const res = await runTraceToExit({ args: ['--role', 'registry'], env: { DATABASE_URL: 'postgresql://trace@127.0.0.1:1/none' } });
    expect(res.code).toBe(1);
    expect(res.stdout).toContain('"msg":"start-up failed"');
    expect(res.stdout).toContain('ECONNREFUSED');
  });
});
