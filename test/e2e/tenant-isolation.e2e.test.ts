import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { taskFinished } from '../support/tasks';
import { startTrace, type TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_tenantisolationplatformadmin0000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
/** An unprivileged user that may reach the test's Postgres socket. */
const UNPRIVILEGED = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
const root = process.getuid?.() === 0;
const SCRATCH = join(__dirname, '..', '.tmp');

/**
 * Two orgs on one install: org B runs a task holding a secret while org A's task tries every way
 * in (docs/standards/security_model.md, ADR 0020). Run with the wrapper as root (each task its own
 * uid and namespaces) and, where the test runs as root, again with the wrapper as an unprivileged
 * user (user namespaces): the claims are the same in both modes.
 */
describe.each([
  ...(root ? [{ mode: 'isolated', wrapperUid: undefined as number | undefined }] : []),
  { mode: 'userns', wrapperUid: root ? UNPRIVILEGED : undefined },
])('tenant isolation, wrapper sandbox $mode', ({ mode, wrapperUid }) => {
  const procs: TraceProcess[] = [];
  let url: string;
  let dataDir: string;
  let victimToken: string;
  let attackerToken: string;
  const secret = `victim-secret-${Math.random().toString(36).slice(2)}`;

  beforeAll(async () => {
    // Outside /tmp, so what keeps the attacker out is the sandbox's cover over it, not its private /tmp.
    mkdirSync(SCRATCH, { recursive: true });
    dataDir = mkdtempSync(join(SCRATCH, 'isolation-'));
    chmodSync(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('isolation');
    const common = { DATABASE_URL: databaseUrl, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '100' };
    // The platform itself; the wrapper runs in it, or as its own unprivileged process.
    const platform = await startTrace({
      args: ['--role', wrapperUid === undefined ? 'all' : 'registry,dispatcher,query'],
      env: { ...common, TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true' },
    });
    procs.push(platform);
    url = platform.baseUrl;
    if (wrapperUid !== undefined) {
      const wrapperData = mkdtempSync(join(tmpdir(), 'trace-isolation-wrapper-'));
      chownSync(wrapperData, wrapperUid, wrapperUid);
      procs.push(
        await startTrace({
          args: ['--role', 'wrapper'],
          asUser: wrapperUid,
          env: {
            ...common,
            HOME: wrapperData,
            TRACE_DATA_DIR: wrapperData,
            TRACE_DISPATCHER_URL: url,
            TRACE_INTERNAL_TOKEN: readFileSync(join(dataDir, 'internal-token'), 'utf8').trim(),
          },
        }),
      );
    }
    const org = async (name: string) => (await call(url, 'POST', '/v1/orgs', { token: TOKEN, body: { name, admin_email: `root@${name}.example` } })).body.token.token as string;
    victimToken = await org('victim');
    attackerToken = await org('attacker');
    expect((await call(url, 'PUT', '/v1/secrets/rpc_key', { token: victimToken, body: { value: secret } })).status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
  });

  it('org A cannot read org B\'s secret, processes, files or /tmp, nor plant code for it', async () => {
    expect(
      (
        await postYaml(
          url,
          '/v1/dags',
          victimToken,
          `name: holder
worker_pools:
  - name: rpc
    slots: [{env: {RPC_URL: "http://rpc"}, secret_env: {RPC_KEY: rpc_key}}]
jobs:
  - name: hold
    operator: user
    language: python
    entry_point: victim.py
    worker_pool: rpc
    config: {seconds: 8}
    outputs: [{backend: s3, update_strategy: replace}]
`,
        )
      ).status,
    ).toBe(201);
    const victimTask = (await call(url, 'POST', '/v1/dags/holder/jobs/hold/runs', { token: victimToken })).body.task_id as string;
    // The victim's process, as the host sees it.
    const victimPid = await waitFor(() => {
      try {
        const pid = Number(execFileSync('pgrep', ['-n', '-f', 'victim\\.py']).toString().trim());
        return pid > 0 ? pid : undefined;
      } catch {
        return undefined;
      }
    }, 'the victim task to be running', 30_000);

    // The platform's data directory itself may be listed where it is another process's (0755 for its
    // Postgres); what is in it is not readable.
    const paths = [
      join(dataDir, 'objects'),
      join(dataDir, 'internal-token'),
      join(dataDir, 'secrets.key'),
      join(dataDir, 'scratch'),
      `/proc/${victimPid}/root/tmp/victim-marker`,
      '/run/trace-sandbox/uids',
    ];
    expect(
      (
        await postYaml(
          url,
          '/v1/dags',
          attackerToken,
          `name: probe
jobs:
  - name: steal
    operator: user
    language: python
    entry_point: attacker.py
    config: {victim_pid: ${victimPid}, code_root: ${JSON.stringify(CODE_ROOT)}, paths: ${JSON.stringify(paths)}}
    outputs: [{backend: s3, update_strategy: replace}]
`,
        )
      ).status,
    ).toBe(201);
    const attack = await taskFinished(url, attackerToken, (await call(url, 'POST', '/v1/dags/probe/jobs/steal/runs', { token: attackerToken })).body.task_id);
    expect(attack.status).toBe('succeeded');
    const report = attack.events[0].payload;
    const text = JSON.stringify(report);
    // Nothing it read holds B's secret.
    expect(text).not.toContain(secret);
    // Its own PID namespace: it sees only its own processes, and B's pid names nothing it can reach.
    expect(report.pids.length).toBeLessThanOrEqual(3);
    expect(report.pids).toContain(1);
    expect(report.signal).toMatch(/^refused/);
    for (const [pid, outcome] of Object.entries(report.ptrace)) expect([pid, outcome]).toEqual([pid, expect.stringMatching(/^refused/)]);
    // The platform's files and the object store: hidden or refused.
    for (const path of paths) expect([path, report.files[path]]).toEqual([path, expect.stringMatching(/^refused/)]);
    // Its /tmp, /dev/shm and /var/tmp are its own: none of B's markers.
    for (const listing of Object.values(report.tmp as Record<string, unknown>)) expect(JSON.stringify(listing)).not.toContain('victim-marker');
    // Shared places are read-only; its private /tmp takes writes that no other task sees.
    for (const path of [join(CODE_ROOT, 'planted.py'), '/usr/local/lib/planted.py', '/planted']) expect([path, report.planted[path]]).toEqual([path, expect.stringMatching(/^refused/)]);
    if (mode === 'isolated') expect(report.uid).toBeGreaterThanOrEqual(200000);

    const held = await taskFinished(url, victimToken, victimTask);
    expect(held.status).toBe('succeeded');
    const victim = held.events[0].payload;
    expect(victim.had_secret).toBe(true);
    expect(victim.planted).toEqual([]);
    expect(victim.user_site_enabled).toBe(false);
    expect(victim.usercustomize_loaded).toBe(false);
    // Its own marker, and nothing A wrote (where the code or the runtime lies under /tmp, their path is bound back in too).
    expect(victim.tmp).toContain('victim-marker');
    expect(victim.tmp).not.toContain('planted');
    expect(victim.tmp).not.toContain('.local');
  }, 120_000);

  it('an org\'s slot environment reaches only its own code, never the steps that build the sandbox', async () => {
    // PATH and LD_PRELOAD set by the org: were they given to unshare, mount or setpriv (which run
    // with privileges), the task would not start at all, or would run their code outside.
    expect(
      (
        await postYaml(
          url,
          '/v1/dags',
          attackerToken,
          `name: env_probe
worker_pools:
  - name: evil
    slots: [{env: {PATH: "/nonexistent", LD_PRELOAD: "/nonexistent/preload.so", LD_LIBRARY_PATH: "/nonexistent"}}]
jobs:
  - name: probe
    operator: user
    language: javascript
    entry_point: probe.js
    worker_pool: evil
    max_attempts: 1
    config: {internal_url: "http://127.0.0.1:9"}
    outputs: [{backend: s3, update_strategy: replace}]
`,
        )
      ).status,
    ).toBe(201);
    const done = await taskFinished(url, attackerToken, (await call(url, 'POST', '/v1/dags/env_probe/jobs/probe/runs', { token: attackerToken })).body.task_id);
    expect([done.status, done.error]).toEqual(['succeeded', null]);
    const report = done.events[0].payload;
    expect(report.env_keys).toEqual(['HOME', 'LANG', 'LD_LIBRARY_PATH', 'LD_PRELOAD', 'PATH', 'TMPDIR']);
    if (mode === 'isolated') expect(report.uid).toBeGreaterThanOrEqual(200000);
  }, 120_000);
});

/** Without namespaces (TRACE_SANDBOX=none, chosen explicitly) a wrapper runs one org's code only. */
describe('tenant isolation, wrapper sandbox none', () => {
  let trace: TraceProcess;
  afterAll(async () => {
    await trace?.stop();
  });

  it('runs the first org\'s user code and refuses another org\'s, saying why', async () => {
    trace = await startTrace({ env: { DATABASE_URL: await createTestDatabase('isolation_none'), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '100', TRACE_SANDBOX: 'none' } });
    const url = trace.baseUrl;
    const dag = `name: probe
jobs:
  - name: probe
    operator: user
    language: javascript
    entry_point: probe.js
    max_attempts: 1
    config: {internal_url: "http://127.0.0.1:9"}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    const outcomes: { status: string; error: string | null }[] = [];
    for (const name of ['first', 'second']) {
      const token = (await call(url, 'POST', '/v1/orgs', { token: TOKEN, body: { name, admin_email: `root@${name}.example` } })).body.token.token as string;
      expect((await postYaml(url, '/v1/dags', token, dag)).status).toBe(201);
      outcomes.push(await taskFinished(url, token, (await call(url, 'POST', '/v1/dags/probe/jobs/probe/runs', { token })).body.task_id));
    }
    expect(outcomes[0]!.status).toBe('succeeded');
    expect(outcomes[1]!.status).toBe('failed');
    expect(outcomes[1]!.error).toMatch(/without a sandbox \(TRACE_SANDBOX=none\) and already serves another org/);
  }, 120_000);
});
