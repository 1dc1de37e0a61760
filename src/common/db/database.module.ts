import { DynamicModule, Global, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { TraceConfig } from '../../config';
import { JsonLogger } from '../logging/json-logger';
import { dataSourceOptions } from './data-source';
import { runMigrationsLocked } from './migrate';
import type { DatabaseTarget } from './system-database';

/** The system database for every role: one pool, migrations applied before anything else runs. */
@Global()
@Module({})
export class DatabaseModule {
  static forRoot(target: DatabaseTarget): DynamicModule {
    return {
      module: DatabaseModule,
      imports: [
        TypeOrmModule.forRootAsync({
          inject: [TraceConfig, JsonLogger],
          useFactory: (config: TraceConfig) => ({
            ...dataSourceOptions(target, config.database.poolSize),
            autoLoadEntities: true,
            // Fail fast at start-up; the process supervisor restarts us.
            retryAttempts: 0,
          }),
          dataSourceFactory: async (options) => {
            const dataSource = await new DataSource(options!).initialize();
            return dataSource;
          },
        }),
      ],
      providers: [
        {
          provide: MIGRATIONS_APPLIED,
          inject: [DataSource, TraceConfig, JsonLogger],
          useFactory: async (dataSource: DataSource, config: TraceConfig, logger: JsonLogger) => {
            if (config.database.runMigrations) return runMigrationsLocked(dataSource, logger);
            if (await dataSource.showMigrations()) {
              throw new Error('the system database schema is behind this binary; run `npm run migrate` or set TRACE_RUN_MIGRATIONS=true');
            }
            return [];
          },
        },
        { provide: DATABASE_TARGET, useValue: target },
      ],
      exports: [MIGRATIONS_APPLIED, DATABASE_TARGET],
    };
  }
}

/** The parsed connection target, for components that need a connection of their own (LISTEN). */
export const DATABASE_TARGET = Symbol('DATABASE_TARGET');

/** Inject this in anything that must not run before the schema is current. */
export const MIGRATIONS_APPLIED = Symbol('MIGRATIONS_APPLIED');
