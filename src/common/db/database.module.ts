import { DynamicModule, Global, Inject, Injectable, Module, OnApplicationShutdown } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { Pool, type PoolConfig } from 'pg';
import { DataSource } from 'typeorm';
import { TraceConfig } from '../../config';
import { DatabaseWatchdog } from '../lifecycle/database-watchdog';
import { JsonLogger } from '../logging/json-logger';
import { dataSourceOptions } from './data-source';
import { runMigrationsLocked } from './migrate';
import { TASK_PATH_SETTINGS, useTaskPathPool } from './sql';
import type { DatabaseTarget } from './system-database';

const DATABASE_TARGET_TOKEN = Symbol('DATABASE_TARGET');

/**
 * The pool the task path's named statements run on (`prepared`), beside TypeORM's: the same
 * database and size, with TASK_PATH_SETTINGS on every connection.
 */
@Injectable()
export class TaskPathPoolOwner implements OnApplicationShutdown {
  readonly pool: Pool;

  constructor(dataSource: DataSource, @Inject(DATABASE_TARGET_TOKEN) target: DatabaseTarget, config: TraceConfig) {
    this.pool = new Pool({
      host: target.host,
      port: target.port,
      user: target.user,
      password: target.password,
      database: target.database,
      ssl: target.ssl as PoolConfig['ssl'],
      max: Math.max(config.database.poolSize, 2),
      application_name: 'trace',
      options: Object.entries(TASK_PATH_SETTINGS).map(([name, value]) => `-c ${name}=${value}`).join(' '),
    });
    // An idle connection that fails (the server restarted) is dropped; the next query opens another.
    this.pool.on('error', () => undefined);
    useTaskPathPool(dataSource, this.pool);
  }

  async onApplicationShutdown(): Promise<void> {
    await this.pool.end();
  }
}

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
        TaskPathPoolOwner,
        {
          provide: DatabaseWatchdog,
          inject: [TraceConfig, JsonLogger],
          useFactory: (config: TraceConfig, logger: JsonLogger) => new DatabaseWatchdog(target, config, logger),
        },
      ],
      exports: [MIGRATIONS_APPLIED, DATABASE_TARGET, TaskPathPoolOwner, DatabaseWatchdog],
    };
  }
}

/** The parsed connection target, for components that need a connection of their own (LISTEN). */
export const DATABASE_TARGET = DATABASE_TARGET_TOKEN;

/** Inject this in anything that must not run before the schema is current. */
export const MIGRATIONS_APPLIED = Symbol('MIGRATIONS_APPLIED');
