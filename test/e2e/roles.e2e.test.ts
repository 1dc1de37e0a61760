import { call } from '../support/http';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { runTraceToExit, startTrace, TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_roles-test-token-0123456789abcdef';

describe('--role picks which modules load', () => {
  let databaseUrl: string;
  const running: TraceProcess[] = [];

  beforeAll(async () => {
    databaseUrl = await createTestDatabase('roles');
    // An all-in-one start bootstraps org `dev` with a known token, so role-limited processes have a caller.
    const all = await startTrace({ env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN } });
    expect(await all.stop()).toBe(0);
  });

  afterEach(async () => {
    await Promise.all(running.splice(0).map((p) => p.stop()));
  });

  it('--role dispatcher has the dispatcher loop and no registry routes', async () => {
    const p = await startTrace({ args: ['--role', 'dispatcher'], env: { DATABASE_URL: databaseUrl } });
    running.push(p);
    const health = await call(p.baseUrl, 'GET', '/health');
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'ok', roles: ['dispatcher'], database: 'up' });
    expect(health.body.loops).toEqual(['dispatcher.node-reaper', 'dispatcher.reaper', 'dispatcher.start-tasks', 'node.heartbeat']);

    // The token is valid (the auth guard is common), but the registry's controllers are not loaded.
    for (const path of ['/v1/me', '/v1/orgs/dev', '/v1/orgs/dev/users']) {
      const res = await call(p.baseUrl, 'GET', path, { token: TOKEN });
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe('not_found');
    }
    const openapi = await call(p.baseUrl, 'GET', '/docs-json');
    expect(Object.keys(openapi.body.paths)).not.toContain('/v1/me');
  });

  it('--role registry serves /v1 and runs no dispatcher loop', async () => {
    const p = await startTrace({ args: ['--role=registry'], env: { DATABASE_URL: databaseUrl } });
    running.push(p);
    const health = await call(p.baseUrl, 'GET', '/health');
    expect(health.body.roles).toEqual(['registry']);
    expect(health.body.loops).toEqual(['node.heartbeat']);
    const me = await call(p.baseUrl, 'GET', '/v1/me', { token: TOKEN });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ org: 'dev', roles: ['admin'] });

    // Its row in `nodes` names only its own role.
    const db = await connect(databaseUrl);
    try {
      const { rows } = await db.query('SELECT roles FROM nodes WHERE id = $1', [health.body.node_id]);
      expect(rows).toEqual([{ roles: ['registry'] }]);
    } finally {
      await db.end();
    }
  });

  it('TRACE_ROLES selects roles when no flag is given, and the flag wins over it', async () => {
    const fromEnv = await startTrace({ env: { DATABASE_URL: databaseUrl, TRACE_ROLES: 'query, sink' } });
    running.push(fromEnv);
    expect((await call(fromEnv.baseUrl, 'GET', '/health')).body.roles).toEqual(['query', 'sink']);

    const flagWins = await startTrace({ args: ['--role', 'delivery'], env: { DATABASE_URL: databaseUrl, TRACE_ROLES: 'query' } });
    running.push(flagWins);
    expect((await call(flagWins.baseUrl, 'GET', '/health')).body.roles).toEqual(['delivery']);
  });

  it('an unknown role exits non-zero and names the valid roles', async () => {
    const res = await runTraceToExit({ args: ['--role', 'registry,scheduler'], env: { DATABASE_URL: databaseUrl } });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('unknown role "scheduler"');
    expect(res.stderr).toContain('valid roles are: all, dispatcher, registry, query, sink, delivery, wrapper');
    expect(res.stderr).not.toMatch(/\bat .*\.js:\d+/); // no stack trace
  });

  it('an empty role list and an unknown flag are refused too', async () => {
    expect((await runTraceToExit({ args: ['--role', ''], env: { DATABASE_URL: databaseUrl } })).code).toBe(2);
    const unknownFlag = await runTraceToExit({ args: ['--roles', 'all'], env: { DATABASE_URL: databaseUrl } });
    expect(unknownFlag.code).toBe(2);
    expect(unknownFlag.stderr).toContain("Unknown option '--roles'");
  });
});
