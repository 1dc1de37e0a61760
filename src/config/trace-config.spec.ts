import { resolve } from 'node:path';
import { ConfigValidationError, loadTraceConfig } from './trace-config';
import { Role } from './roles';

describe('loadTraceConfig', () => {
  it('reads the defaults from config/default.env', () => {
    const config = loadTraceConfig({}, {});
    expect(config.roles).toHaveLength(6);
    expect(config.http).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(config.database.url).toBeUndefined();
    expect(config.dataDir).toBe(resolve('.trace'));
    expect(config.bootstrap.devOrg).toBe(true); // all-in-one
    expect(config.logLevel).toBe('info');
  });

  it('lets the environment override, and the --role flag override TRACE_ROLES', () => {
    const config = loadTraceConfig(
      { roles: 'registry,dispatcher' },
      { PORT: '9000', TRACE_ROLES: 'query', DATABASE_URL: 'postgres://u@db/trace', TRACE_RUN_MIGRATIONS: 'false' },
    );
    expect(config.http.port).toBe(9000);
    expect(config.roles).toEqual([Role.Dispatcher, Role.Registry]);
    expect(config.database).toMatchObject({ url: 'postgres://u@db/trace', runMigrations: false });
    expect(config.bootstrap.devOrg).toBe(false); // not all-in-one
  });

  it('bootstraps the dev org outside all-in-one only when asked, and only with the registry', () => {
    expect(loadTraceConfig({}, { TRACE_ROLES: 'registry', TRACE_BOOTSTRAP_DEV_ORG: 'true' }).bootstrap.devOrg).toBe(true);
    expect(loadTraceConfig({}, { TRACE_ROLES: 'query', TRACE_BOOTSTRAP_DEV_ORG: 'true' }).bootstrap.devOrg).toBe(false);
    expect(loadTraceConfig({}, { TRACE_BOOTSTRAP_DEV_ORG: 'false' }).bootstrap.devOrg).toBe(false);
  });

  it('says what is wrong in terms a person can act on', () => {
    const message = (env: NodeJS.ProcessEnv) => {
      try {
        loadTraceConfig({}, env);
      } catch (err) {
        return (err as Error).message;
      }
      throw new Error('expected a ConfigValidationError');
    };
    expect(message({ PORT: 'eighty' })).toContain('PORT: PORT must be an integer number (got "eighty")');
    expect(message({ TRACE_HEARTBEAT_INTERVAL_MS: '5000', TRACE_NODE_EXPIRY_MS: '6000' })).toContain('at least twice TRACE_HEARTBEAT_INTERVAL_MS');
    const devToken = message({ TRACE_DEV_TOKEN: 'x'.repeat(40) });
    expect(devToken).toContain('must start with "trc_"');
    expect(devToken).not.toContain('x'.repeat(40)); // sensitive values are never echoed
  });

  it('reads the Query Service\'s sizes as DuckDB does, and its worker counts', () => {
    const q = loadTraceConfig({}, { TRACE_QUERY_MEMORY_LIMIT: '512MB', TRACE_QUERY_BATCH_MEMORY_LIMIT: '2GiB', TRACE_QUERY_WORKERS: '8' }).query;
    expect(q).toMatchObject({ memoryLimit: '512MB', memoryLimitBytes: 512e6, workers: 8, maxResultSize: '32MB', maxResultBytes: 32e6 });
    expect(q.batch).toMatchObject({ memoryLimit: '2GiB', memoryLimitBytes: 2 * 2 ** 30, workers: 2 });
    expect(() => loadTraceConfig({}, { TRACE_QUERY_WORKERS: '0', TRACE_QUERY_MAX_RESULT_SIZE: 'lots' })).toThrow(/TRACE_QUERY_WORKERS: .*\n.*TRACE_QUERY_MAX_RESULT_SIZE must be a size such as 32MB/s);
  });

  it('lists every violation at once', () => {
    let error: ConfigValidationError | undefined;
    try {
      loadTraceConfig({}, { PORT: '70000', DATABASE_POOL_SIZE: 'x', TRACE_ROLES: 'cron', TRACE_DEV_TOKEN: 'short', TRACE_RUN_MIGRATIONS: 'maybe' });
    } catch (err) {
      error = err as ConfigValidationError;
    }
    expect(error).toBeInstanceOf(ConfigValidationError);
    const fields = error!.violations.map((v) => v.split(':')[0]).sort();
    expect(fields).toEqual(['DATABASE_POOL_SIZE', 'PORT', 'TRACE_DEV_TOKEN', 'TRACE_ROLES', 'TRACE_RUN_MIGRATIONS']);
  });
});
