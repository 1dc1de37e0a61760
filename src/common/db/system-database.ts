import { parse as parseConnectionString } from 'pg-connection-string';
import type { TlsOptions } from 'node:tls';
import type { TraceConfig } from '../../config';
import type { JsonLogger } from '../logging/json-logger';
import { EmbeddedPostgres, SocketTarget } from './embedded-postgres';

/**
 * Where the system database is, already parsed: an external server from DATABASE_URL (query
 * parameters such as `sslmode` or a socket `host` kept), or the embedded one by its socket.
 */
export interface DatabaseTarget {
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
  ssl?: boolean | TlsOptions;
  /** For logs: never includes the password. */
  label: string;
}

export function parseDatabaseUrl(url: string): DatabaseTarget {
  const c = parseConnectionString(url);
  const host = c.host || 'localhost';
  const port = c.port ? Number(c.port) : 5432;
  const database = c.database || 'postgres';
  return {
    host,
    port,
    user: c.user || 'postgres',
    password: c.password || undefined,
    database,
    ssl: typeof c.ssl === 'string' ? undefined : (c.ssl as boolean | TlsOptions | undefined),
    label: `postgresql://${c.user ? `${c.user}@` : ''}${host.startsWith('/') ? `[socket ${host}]` : host}:${port}/${database}`,
  };
}

function fromSocket(s: SocketTarget): DatabaseTarget {
  return { host: s.host, port: s.port, user: s.username, database: s.database, label: `embedded (socket ${s.host})` };
}

export interface SystemDatabase {
  target: DatabaseTarget;
  embedded: boolean;
  /** Stops the embedded server if we started one; a no-op for an external server. */
  stop(): Promise<void>;
}

/**
 * DATABASE_URL set → that server. Unset → the embedded Postgres under TRACE_DATA_DIR, restarted
 * when it dies; `onLost` hears when it is given up on (ADR 0021).
 */
export async function openSystemDatabase(config: TraceConfig, logger: JsonLogger, hooks: { onLost?: (reason: string) => void } = {}): Promise<SystemDatabase> {
  if (config.database.url) {
    return { target: parseDatabaseUrl(config.database.url), embedded: false, stop: async () => undefined };
  }
  const pg = new EmbeddedPostgres({ dataDir: config.dataDir, osUser: config.embeddedPostgres.osUser, logger, onLost: hooks.onLost, supervise: true });
  try {
    const target = fromSocket(await pg.start());
    return { target, embedded: true, stop: () => pg.stop() };
  } catch (err) {
    await pg.stop();
    throw err;
  }
}

