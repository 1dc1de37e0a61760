import type { DataSource } from 'typeorm';
import type { JsonLogger } from '../logging/json-logger';

/** Arbitrary but fixed: every Trace process contends on this key to run migrations. */
const MIGRATION_LOCK_KEY = 7_265_173_001;

/**
 * Applies pending migrations while holding a session-level advisory lock on a dedicated
 * connection, so processes starting at the same time run them one after another: the first
 * applies them, the others find nothing pending. Each migration runs in its own transaction.
 */
export async function runMigrationsLocked(dataSource: DataSource, logger: JsonLogger): Promise<string[]> {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    await runner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      const applied = await dataSource.runMigrations({ transaction: 'each' });
      const names = applied.map((m) => m.name);
      logger.event('info', 'Migrations', names.length ? 'applied migrations' : 'schema is up to date', { applied: names });
      return names;
    } finally {
      await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    await runner.release();
  }
}
