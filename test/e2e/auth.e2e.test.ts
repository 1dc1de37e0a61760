import { call } from '../support/http';
import { createTestDatabase } from '../support/shared-postgres';
import { waitFor } from '../support/wait-for';
import { startTrace, TraceProcess } from '../support/trace-process';

const DEV_TOKEN = 'trc_auth-test-dev-token-0123456789';

describe('identity and token auth', () => {
  let trace: TraceProcess;
  let url: string;
  let acmeAdminToken: string;
  let acmeAdminId: string;

  beforeAll(async () => {
    trace = await startTrace({ env: { DATABASE_URL: await createTestDatabase('auth'), TRACE_DEV_TOKEN: DEV_TOKEN } });
    url = trace.baseUrl;
    const acme = await call(url, 'POST', '/v1/orgs', { token: DEV_TOKEN, body: { name: 'acme', admin_email: 'root@acme.example' } });
    expect(acme.status).toBe(201);
    acmeAdminToken = acme.body.token.token;
    acmeAdminId = acme.body.admin.user_id;
  });

  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it('no token → 401 in the error shape', async () => {
    const res = await call(url, 'GET', '/v1/me');
    expect(res.status).toBe(401);
    expect(res.body).toEqual({ error: { code: 'unauthenticated', message: expect.stringContaining('Authorization') } });
  });

  it('a malformed header, an unknown token and a non-Bearer scheme → 401', async () => {
    for (const authorization of ['Bearer', 'Basic dXNlcjpwYXNz', `Bearer ${DEV_TOKEN}x`, 'Bearer trc_nope']) {
      const res = await call(url, 'GET', '/v1/me', { headers: { authorization } });
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe('unauthenticated');
    }
  });

  it('a token of one org on another org → 403', async () => {
    const res = await call(url, 'GET', '/v1/orgs/dev', { token: acmeAdminToken });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('org_forbidden');
    expect((await call(url, 'GET', '/v1/orgs/acme', { token: acmeAdminToken })).status).toBe(200);
    // An org that does not exist looks the same as one that is not yours.
    expect((await call(url, 'GET', '/v1/orgs/nope/users', { token: acmeAdminToken })).status).toBe(403);
  });

  it('an org admin creates a user with roles and issues a token; the user is not an admin', async () => {
    const created = await call(url, 'POST', '/v1/orgs/acme/users', {
      token: acmeAdminToken,
      body: { email: 'ana@acme.example', display_name: 'Ana', roles: ['analyst', 'analyst'] },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ email: 'ana@acme.example', roles: ['analyst'] });
    const anaId = created.body.user_id;

    const issued = await call(url, 'POST', `/v1/orgs/acme/users/${anaId}/tokens`, { token: acmeAdminToken, body: { name: 'laptop', expires_in_days: 30 } });
    expect(issued.status).toBe(201);
    expect(issued.body.token).toMatch(/^trc_/);
    expect(issued.body.expires_at).not.toBeNull();
    const anaToken: string = issued.body.token;

    const me = await call(url, 'GET', '/v1/me', { token: anaToken });
    expect(me.body).toMatchObject({ email: 'ana@acme.example', org: 'acme', roles: ['analyst'], platform_admin: false });

    // Admin-only endpoints as a non-admin → 403.
    for (const [method, path, body] of [
      ['GET', '/v1/orgs/acme/users', undefined],
      ['POST', '/v1/orgs/acme/users', { email: 'x@acme.example', roles: [] }],
      ['PUT', `/v1/orgs/acme/users/${anaId}/roles`, { roles: ['admin'] }],
      ['POST', `/v1/orgs/acme/users/${acmeAdminId}/tokens`, { name: 'steal' }],
    ] as const) {
      const res = await call(url, method, path, { token: anaToken, body });
      expect(res.status).toBe(403);
      expect(res.body.error.code).toBe('org_admin_required');
    }
    // Creating orgs is for platform admins only.
    const org = await call(url, 'POST', '/v1/orgs', { token: acmeAdminToken, body: { name: 'other', admin_email: 'o@other.example' } });
    expect(org.status).toBe(403);
    expect(org.body.error.code).toBe('platform_admin_required');

    // Members manage their own tokens; the listing never shows a secret.
    const own = await call(url, 'POST', `/v1/orgs/acme/users/${anaId}/tokens`, { token: anaToken, body: { name: 'ci' } });
    expect(own.status).toBe(201);
    const list = await call(url, 'GET', `/v1/orgs/acme/users/${anaId}/tokens`, { token: anaToken });
    expect(list.body.map((t: { name: string }) => t.name)).toEqual(['laptop', 'ci']);
    expect(JSON.stringify(list.body)).not.toContain(anaToken);

    // Revoking a token makes it fail at once.
    const revoked = await call(url, 'DELETE', `/v1/orgs/acme/tokens/${own.body.id}`, { token: anaToken });
    expect(revoked.status).toBe(200);
    expect(revoked.body.revoked_at).not.toBeNull();
    expect((await call(url, 'GET', '/v1/me', { token: own.body.token })).status).toBe(401);

    // Roles changes apply to the next request; removal revokes all the member's tokens.
    const promoted = await call(url, 'PUT', `/v1/orgs/acme/users/${anaId}/roles`, { token: acmeAdminToken, body: { roles: ['admin', 'analyst'] } });
    expect(promoted.body.roles).toEqual(['admin', 'analyst']);
    expect((await call(url, 'GET', '/v1/orgs/acme/users', { token: anaToken })).status).toBe(200);
    expect((await call(url, 'DELETE', `/v1/orgs/acme/users/${anaId}`, { token: acmeAdminToken })).status).toBe(204);
    expect((await call(url, 'GET', '/v1/me', { token: anaToken })).status).toBe(401);
  });

  it('the last admin of an org cannot be demoted or removed', async () => {
    const demote = await call(url, 'PUT', `/v1/orgs/acme/users/${acmeAdminId}/roles`, { token: acmeAdminToken, body: { roles: ['analyst'] } });
    expect(demote.status).toBe(409);
    expect(demote.body.error.code).toBe('last_admin');
    expect((await call(url, 'DELETE', `/v1/orgs/acme/users/${acmeAdminId}`, { token: acmeAdminToken })).status).toBe(409);
    expect((await call(url, 'GET', '/v1/me', { token: acmeAdminToken })).body.roles).toEqual(['admin']);
  });

  it('bad input: malformed JSON, unknown fields, bad values, bad ids — 400 with the field and reason', async () => {
    const malformed = await call(url, 'POST', '/v1/orgs/acme/users', { token: acmeAdminToken, rawBody: '{"email": ' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('malformed_json');

    const unknown = await call(url, 'POST', '/v1/orgs/acme/users', { token: acmeAdminToken, body: { email: 'b@acme.example', roles: [], is_admin: true } });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toMatchObject({ code: 'validation_failed', details: [{ field: 'is_admin', reason: 'property is_admin should not exist' }] });

    const bad = await call(url, 'POST', '/v1/orgs/acme/users', { token: acmeAdminToken, body: { email: 'not-an-email', roles: ['Bad Role'] } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.map((d: { field: string }) => d.field).sort()).toEqual(['email', 'roles']);

    const badId = await call(url, 'GET', '/v1/orgs/acme/users/123/tokens', { token: acmeAdminToken });
    expect(badId.status).toBe(400);
    expect(badId.body.error.details).toEqual([{ field: 'userId', reason: 'must be a UUID' }]);

    // Nothing was written by the rejected requests.
    const users = await call(url, 'GET', '/v1/orgs/acme/users', { token: acmeAdminToken });
    expect(users.body.map((u: { email: string }) => u.email)).toEqual(['root@acme.example']);
  });

  it('duplicates are conflicts, not errors', async () => {
    expect((await call(url, 'POST', '/v1/orgs', { token: DEV_TOKEN, body: { name: 'acme', admin_email: 'z@acme.example' } })).body.error.code).toBe('org_exists');
    const again = await call(url, 'POST', '/v1/orgs/acme/users', { token: acmeAdminToken, body: { email: 'ROOT@acme.example', roles: [] } });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('member_exists');
  });

  it('unknown routes answer 404 in the error shape; health, metrics and the OpenAPI document need no token', async () => {
    const missing = await call(url, 'GET', '/v1/nothing-here', { token: acmeAdminToken });
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('not_found');

    const metrics = await call(url, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    expect(metrics.text).toMatch(/trace_http_requests_total\{method="GET",route="\/v1\/me",status="200"\} \d+/);
    expect(metrics.text).toContain('trace_process_cpu_user_seconds_total');

    const openapi = await call(url, 'GET', '/docs-json');
    expect(openapi.body.openapi).toMatch(/^3\./);
    expect(Object.keys(openapi.body.paths)).toEqual(expect.arrayContaining(['/health', '/v1/me', '/v1/orgs/{org}/users']));
    const ui = await call(url, 'GET', '/docs');
    expect(ui.status).toBe(200);
    expect(ui.text).toContain('swagger');
  });

  it('every request is logged as one JSON line with a request id that is echoed back', async () => {
    const res = await call(url, 'GET', '/health', { headers: { 'x-request-id': 'probe-42' } });
    expect(res.headers.get('x-request-id')).toBe('probe-42');
    const line = await waitFor(() => trace.logs.find((l) => l.request_id === 'probe-42'), 'the request log line');
    expect(line).toMatchObject({ level: 'info', context: 'Http', msg: 'request', method: 'GET', path: '/health', status: 200 });
  });
});
