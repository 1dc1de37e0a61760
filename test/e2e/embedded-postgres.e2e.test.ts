import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { startTrace } from '../support/trace-process';

describe('embedded Postgres (no DATABASE_URL)', () => {
  it('first start bootstraps org dev and prints its token once; data survives stop and start', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-embedded-'));
    await chmod(dataDir, 0o755);
    const env = { TRACE_DATA_DIR: dataDir, DATABASE_URL: undefined };

    const first = await startTrace({ env });
    const printed = first.logs.filter((l) => typeof l.dev_token === 'string');
    expect(printed).toHaveLength(1);
    const token = printed[0]!.dev_token as string;
    const tokenFile = join(dataDir, 'dev-token');
    expect(readFileSync(tokenFile, 'utf8').trim()).toBe(token);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);

    const me = await call(first.baseUrl, 'GET', '/v1/me', { token });
    expect(me.body).toMatchObject({ org: 'dev', email: 'admin@dev.local', roles: ['admin'], platform_admin: true });
    const health = await call(first.baseUrl, 'GET', '/health');
    expect(health.body.database).toBe('up');
    const created = await call(first.baseUrl, 'POST', '/v1/orgs/dev/users', { token, body: { email: 'kept@dev.local', roles: ['analyst'] } });
    expect(created.status).toBe(201);

    // SIGTERM drains and stops the embedded server with us.
    expect(await first.stop('SIGTERM')).toBe(0);
    expect(first.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(['draining', 'stopped']));
    expect(existsSync(join(dataDir, 'pg', 'postmaster.pid'))).toBe(false);

    const second = await startTrace({ env });
    try {
      expect(second.logs.some((l) => 'dev_token' in l)).toBe(false);
      expect(second.logs.some((l) => l.msg === 'initialising a new cluster')).toBe(false);
      expect(readFileSync(tokenFile, 'utf8').trim()).toBe(token);
      const users = await call(second.baseUrl, 'GET', '/v1/orgs/dev/users', { token });
      expect(users.body.map((u: { email: string }) => u.email)).toEqual(['admin@dev.local', 'kept@dev.local']);
    } finally {
      expect(await second.stop('SIGINT')).toBe(0);
    }
  });

  it('TRACE_DEV_TOKEN becomes the dev admin token and is not printed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-embedded-'));
    await chmod(dataDir, 0o755);
    const token = 'trc_configured-dev-token-abcdefghijkl';
    const p = await startTrace({ env: { TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: token } });
    try {
      expect(p.logs.some((l) => 'dev_token' in l)).toBe(false);
      expect((await call(p.baseUrl, 'GET', '/v1/me', { token })).status).toBe(200);
    } finally {
      expect(await p.stop()).toBe(0);
    }
  });
});
