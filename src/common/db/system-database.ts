import type { TraceConfig } from '../../config';
import type { JsonLogger } from '../logging/json-logger';
import { EmbeddedPostgres, SocketTarget } from './embedded-postgres';

/** Where the system database is: an external server by URL, or the embedded one by socket. */
export type DatabaseTarget = { url: string } | SocketTarget;

export interface SystemDatabase {
  target: DatabaseTarget;
  embedded: boolean;
  /** Stops the embedded server if we started one; a no-op for an external server. */
  stop(): Promise<void>;
}

/** DATABASE_URL set → that server. Unset → the embedded Postgres under TRACE_DATA_DIR. */
export async function openSystemDatabase(config: TraceConfig, logger: JsonLogger): Promise<SystemDatabase> {
  if (config.database.url) {
    return { target: { url: config.database.url }, embedded: false, stop: async () => undefined };
  }
  const pg = new EmbeddedPostgres({ dataDir: config.dataDir, osUser: config.embeddedPostgres.osUser, logger });
  try {
    const target = await pg.start();
    return { target, embedded: true, stop: () => pg.stop() };
  } catch (err) {
    await pg.stop();
    throw err;
  }
}

/** A loggable description that never includes a password. */
export function describeTarget(target: DatabaseTarget): string {
  if ('url' in target) {
    const u = new URL(target.url);
    return `${u.protocol}//${u.username ? `${u.username}@` : ''}${u.host}${u.pathname}`;
  }
  return `embedded (socket ${target.host})`;
}
