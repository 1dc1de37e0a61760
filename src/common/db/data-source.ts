import { DataSource, DataSourceOptions } from 'typeorm';
import { MIGRATIONS } from '../../../migrations';
import type { DatabaseTarget } from './system-database';

export const MIGRATIONS_TABLE = 'trace_migrations';

/** The one place TypeORM is configured. synchronize is off: the schema is the migrations. */
export function dataSourceOptions(target: DatabaseTarget, poolSize: number): DataSourceOptions {
  return {
    type: 'postgres',
    host: target.host,
    port: target.port,
    username: target.user,
    password: target.password,
    database: target.database,
    ssl: target.ssl,
    synchronize: false,
    migrationsRun: false,
    migrations: MIGRATIONS,
    migrationsTableName: MIGRATIONS_TABLE,
    migrationsTransactionMode: 'each',
    // Generic plans for named statements (common/db/sql.ts `prepared`): planned once per
    // connection. Unnamed statements, everything else, are planned per call as usual.
    extra: { max: Math.max(poolSize, 2), application_name: 'trace', options: '-c plan_cache_mode=force_generic_plan' },
    logging: false,
  };
}

export function createDataSource(target: DatabaseTarget, poolSize: number): DataSource {
  return new DataSource(dataSourceOptions(target, poolSize));
}
