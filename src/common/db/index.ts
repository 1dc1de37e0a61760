export { DatabaseModule, MIGRATIONS_APPLIED, TaskPathPoolOwner } from './database.module';
export { createDataSource, dataSourceOptions, MIGRATIONS_TABLE } from './data-source';
export { runMigrationsLocked } from './migrate';
export { openSystemDatabase, parseDatabaseUrl, type DatabaseTarget, type SystemDatabase } from './system-database';
export { EmbeddedPostgres, type SocketTarget } from './embedded-postgres';
export { prepared, sql, sqlOne, TASK_PATH_SETTINGS, taskPathPool, useTaskPathPool, type Queryable, type TaskPathPool } from './sql';
export { DATABASE_TARGET } from './database.module';
export { PgListener } from './pg-listener';
