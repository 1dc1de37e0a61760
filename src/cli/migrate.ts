import 'reflect-metadata';
import { createDataSource, openSystemDatabase, runMigrationsLocked } from '../common/db';
import { JsonLogger } from '../common/logging/json-logger';
import { ConfigValidationError, loadTraceConfig } from '../config';

/** `npm run migrate`: applies pending migrations (under the same advisory lock as start-up) and exits. */
async function migrate(): Promise<void> {
  let config;
  try {
    config = loadTraceConfig();
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigValidationError ? err.message : (err as Error).message}\n`);
    process.exit(2);
  }
  const logger = new JsonLogger(config.logLevel);
  const database = await openSystemDatabase(config, logger);
  try {
    logger.event('info', 'Migrate', 'system database', { database: database.target.label });
    const dataSource = await createDataSource(database.target, 2).initialize();
    try {
      await runMigrationsLocked(dataSource, logger);
    } finally {
      await dataSource.destroy();
    }
  } finally {
    await database.stop();
  }
}

migrate().catch((err: Error) => {
  process.stderr.write(`migration failed: ${err.message}\n`);
  process.exit(1);
});
