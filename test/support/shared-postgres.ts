import { mkdtempSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { EmbeddedPostgres } from '../../src/common/db/embedded-postgres';
import { JsonLogger } from '../../src/common/logging/json-logger';

/** The env var through which global setup tells the tests where the shared server's socket is. */
export const SHARED_PG_SOCKET_ENV = 'TRACE_TEST_PG_SOCKET';

/** One real Postgres for the whole run; each test file makes its own databases in it. */
export async function startSharedPostgres(): Promise<EmbeddedPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'trace-test-pg-'));
  await chmod(dir, 0o755);
  const pg = new EmbeddedPostgres({ dataDir: dir, osUser: 'postgres', logger: new JsonLogger('warn', () => undefined) });
  const target = await pg.start();
  process.env[SHARED_PG_SOCKET_ENV] = target.host;
  return pg;
}

let counter = 0;

/** A new, empty database on the shared server; returns its DATABASE_URL. */
export async function createTestDatabase(prefix = 'test'): Promise<string> {
  const socket = process.env[SHARED_PG_SOCKET_ENV];
  if (!socket) throw new Error(`${SHARED_PG_SOCKET_ENV} is not set: run the tests through jest (global setup starts Postgres)`);
  const name = `${prefix}_${process.pid}_${Date.now()}_${counter++}`;
  const client = new Client({ host: socket, port: 5432, user: 'trace', database: 'postgres' });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE "${name}"`);
  } finally {
    await client.end();
  }
  return `postgresql://trace@localhost/${name}?host=${encodeURIComponent(socket)}`;
}

/** A pg client on a database URL made by createTestDatabase; the caller ends it. */
export async function connect(databaseUrl: string): Promise<Client> {
  const client = new Client({ connectionString: databaseUrl });
  await client.connect();
  return client;
}
