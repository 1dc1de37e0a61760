import { mkdtempSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { attemptToken, parseAttemptToken } from '../../src/dispatcher/core/attempt-token';
import { PAYLOAD_READ_SQL, TASK_CLAIM_SQL } from '../../src/dispatcher/core/attempts.service';
import { METER_START_SQL } from '../../src/dispatcher/core/task-starter.service';
import { LocalTransport } from '../../src/dispatcher/transport/local-transport';
import { DispatcherClient } from '../../src/wrapper/dispatcher-client';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_contract-test-dev-token-0000000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const DAG = (timeout: string, maxConcurrency = 5, name = 'contract') => `name: ${name}
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    timeout: ${timeout}
    max_attempts: 3
    scaling: {max_concurrency: ${maxConcurrency}}
    outputs: [${OUT}]
  - name: reader
    operator: user
    language: javascript
    entry_point: consumer.js
    inputs: [{from: {job: source, output: 0}}]
    outputs: [${OUT}]
`;

/**
 * The /internal/* contract, driven over HTTP the way a wrapper would, against a process that runs
 * the registry and dispatcher but no wrapper — so the test holds the attempt tokens itself.
 */
describe('the internal contract: attempt gating, idempotent events, cancel', () => {
  let trace: TraceProcess;
  let url: string;
  let platform: string;
  let databaseUrl: string;

  const task = async (id: string) => (await call(url, 'GET', `/v1/tasks/${id}`, { token: TOKEN })).body;
  const trigger = async (dag = 'contract') => (await call(url, 'POST', `/v1/dags/${dag}/jobs/source/runs`, { token: TOKEN })).body.task_id as string;
  const fetchTask = (id: string, credential = platform) => call(url, 'GET', `/internal/task-fetch?task_id=${id}`, { token: credential });
  const started = (id: string, attempt = 1) => waitFor(async () => ((await task(id)).attempt === attempt && (await task(id)).status === 'running' ? true : undefined), `attempt ${attempt} of ${id} to start`, 30_000);
  const range = (start: number) => ({ output: 0, kind: 'data', start, end: start + 999 });

  beforeAll(async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-contract-'));
    await chmod(dataDir, 0o755);
    trace = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: (databaseUrl = await createTestDatabase('contract')), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '100', TRACE_REAPER_INTERVAL_MS: '100' },
    });
    url = trace.baseUrl;
    platform = readFileSync(join(dataDir, 'internal-token'), 'utf8').trim();
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h'))).status).toBe(201);
  });
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it('refuses user tokens and missing or wrong credentials on /internal/*', async () => {
    const id = await trigger();
    await started(id);
    expect((await fetchTask(id, TOKEN)).body.error.message).toContain('user API tokens are not accepted');
    expect((await call(url, 'GET', `/internal/task-fetch?task_id=${id}`)).status).toBe(401);
    expect((await fetchTask(id, 'x'.repeat(44))).status).toBe(401);
    expect((await call(url, 'POST', '/internal/events', { token: platform, body: { events: [] } })).status).toBe(401);
    expect((await call(url, 'POST', '/internal/events', { token: 'tra_forged', body: { events: [] } })).status).toBe(401);
    // A token naming the running attempt, with any secret but the one issued for it, is refused;
    // the issued one is accepted.
    const issued = (await fetchTask(id)).body.attempt_token as string;
    const forged = attemptToken(id, 1, randomBytes(32));
    expect(parseAttemptToken(forged)).toMatchObject({ taskId: id, attempt: 1 });
    for (const [path, body] of [['/internal/events', { events: [range(0)] }], ['/internal/task-complete', { status: 'succeeded' }], ['/internal/task-complete-batch', { completions: [{ attempt_token: forged, status: 'succeeded' }] }]] as const) {
      const res = await call(url, 'POST', path, { token: path.endsWith('batch') ? platform : forged, body });
      expect(res.body.error?.message ?? res.body.results[0].error.message).toBe('attempt token is unknown');
    }
    expect((await task(id)).events).toEqual([]);
    expect((await call(url, 'POST', '/internal/events', { token: issued, body: { events: [range(0)] } })).body.accepted).toBe(1);
    expect((await call(url, 'POST', '/internal/task-complete', { token: issued, body: { status: 'succeeded' } })).body.status).toBe('succeeded');
    const openapi = await call(url, 'GET', '/docs-json');
    expect(Object.keys(openapi.body.paths).filter((p) => p.startsWith('/internal'))).toEqual([]);
  });

  it('1 event → 1 task per consumer, also when the same event is posted twice; 1 task → many events', async () => {
    const id = await trigger();
    await started(id);
    const fetched = await fetchTask(id);
    expect(fetched.status).toBe(200);
    expect(fetched.body).toMatchObject({ status: 'Ready', task_id: id, attempt: 1, input: null, idempotency: { producer_task_id: id, attempt: 1 } });
    expect(JSON.stringify(fetched.body)).not.toContain(platform);
    const token = fetched.body.attempt_token as string;

    // A second fetch of the same attempt (a redelivered message) is refused: one attempt runs once.
    expect((await fetchTask(id)).body.error.code).toBe('stale_attempt');

    const first = await call(url, 'POST', '/internal/events', { token, body: { events: [range(0), range(1000)] } });
    expect(first.body).toEqual({ accepted: 2, duplicates: 0 });
    const again = await call(url, 'POST', '/internal/events', { token, body: { events: [range(0), range(1000)] } });
    expect(again.body).toEqual({ accepted: 0, duplicates: 2 });
    const done = await call(url, 'POST', '/internal/task-complete', { token, body: { status: 'succeeded', events: [range(1000), range(2000)] } });
    expect(done.body).toEqual({ status: 'succeeded', accepted: 1 });

    const t = await task(id);
    expect(t.events).toHaveLength(3);
    const readers = await waitFor(async () => {
      const list = (await call(url, 'GET', '/v1/tasks?dag=contract&job=reader&limit=1000', { token: TOKEN })).body as { event_id: string }[];
      const mine = list.filter((r) => t.events.some((e: { id: string }) => e.id === r.event_id));
      return mine.length >= 3 ? mine : undefined;
    }, 'reader tasks');
    expect(readers).toHaveLength(3);
    expect(new Set(readers.map((r) => r.event_id)).size).toBe(3);

    // After completion the attempt's token is good for nothing more.
    expect((await call(url, 'POST', '/internal/events', { token, body: { events: [range(5000)] } })).body.error.code).toBe('stale_attempt');
    const twice = await call(url, 'POST', '/internal/task-complete', { token, body: { status: 'succeeded' } });
    expect(twice.status).toBe(409);
  });

  it('an attempt completes once: a failed attempt queued for retry cannot then report success', async () => {
    const id = await trigger();
    await started(id);
    const token = (await fetchTask(id)).body.attempt_token;
    expect((await call(url, 'POST', '/internal/task-complete', { token, body: { status: 'failed', error: 'boom' } })).body.status).toBe('queued');
    const again = await call(url, 'POST', '/internal/task-complete', { token, body: { status: 'succeeded' } });
    expect(again.status).toBe(409);
    expect(again.body.error.message).toContain('already completed (failed)');
    const t = await task(id);
    expect(t.attempts[0]).toMatchObject({ attempt: 1, outcome: 'failed', error: 'boom' });
  });

  it('bad events are refused with the field and reason, and nothing of the batch is stored', async () => {
    const id = await trigger();
    await started(id);
    const token = (await fetchTask(id)).body.attempt_token;
    const bad = await call(url, 'POST', '/internal/events', { token, body: { events: [range(0), { output: 0, start: 5, end: 1 }, { output: 7, cursor: 'x' }, { output: 0 }] } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.map((d: { field: string }) => d.field)).toEqual(['events[1].end', 'events[3]']);
    const wrongOutput = await call(url, 'POST', '/internal/events', { token, body: { events: [range(0), { output: 7, cursor: 'x' }] } });
    expect(wrongOutput.status).toBe(400);
    expect((await task(id)).events).toEqual([]);

    // An output with no current dataset version: refused whole (its events would be lost), nothing stored.
    const db = await connect(databaseUrl);
    try {
      const pointer = (await db.query(`SELECT p.* FROM dag_dataset_pointers p JOIN datasets d USING (dataset_uuid) JOIN dags g ON g.id = d.dag_id WHERE g.name = 'contract' AND d.job_name = 'source'`)).rows[0];
      await db.query(`DELETE FROM dag_dataset_pointers WHERE dag_id = $1 AND dataset_uuid = $2`, [pointer.dag_id, pointer.dataset_uuid]);
      const orphaned = await call(url, 'POST', '/internal/events', { token, body: { events: [range(0), range(1000)] } });
      expect(orphaned.status).toBe(409);
      expect(orphaned.body.error.code).toBe('no_current_version');
      expect((await task(id)).events).toEqual([]);
      await db.query(`INSERT INTO dag_dataset_pointers SELECT (json_populate_record(null::dag_dataset_pointers, $1::json)).*`, [JSON.stringify(pointer)]);
      expect((await call(url, 'POST', '/internal/events', { token, body: { events: [range(0), range(1000)] } })).body).toEqual({ accepted: 2, duplicates: 0 });
    } finally {
      await db.end();
    }
  });

  it('a stale attempt is refused once a newer one started; a late completion is accepted while none has', async () => {
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1s'))).status).toBe(201); // execution-only edit: applies at once
    const late = await trigger();
    await started(late);
    const lateToken = (await fetchTask(late)).body.attempt_token;
    // The reaper times attempt 1 out; the retry waits out its back-off (2 s), so no newer attempt exists yet.
    await waitFor(async () => ((await task(late)).attempts[0]?.outcome === 'timed_out' ? true : undefined), 'attempt 1 to time out');
    const accepted = await call(url, 'POST', '/internal/task-complete', { token: lateToken, body: { status: 'succeeded', events: [range(0)] } });
    expect(accepted.body.status).toBe('succeeded');
    expect((await task(late)).status).toBe('succeeded');

    const stale = await trigger();
    await started(stale);
    const staleToken = (await fetchTask(stale)).body.attempt_token;
    // Accepted while current (the dispatcher now knows this attempt's producer) ...
    expect((await call(url, 'POST', '/internal/events', { token: staleToken, body: { events: [range(5000)] } })).body).toEqual({ accepted: 1, duplicates: 0 });
    await started(stale, 2);
    // ... and refused by the gate in the storing statement once attempt 2 has started.
    const refusedEvents = await call(url, 'POST', '/internal/events', { token: staleToken, body: { events: [range(0)] } });
    expect(refusedEvents.status).toBe(409);
    expect(refusedEvents.body.error.code).toBe('stale_attempt');
    const refusedCompletion = await call(url, 'POST', '/internal/task-complete', { token: staleToken, body: { status: 'succeeded' } });
    expect(refusedCompletion.body.error.message).toContain('superseded by attempt 2');
    const t = await task(stale);
    expect(t.events.map((e: { start: string; producer_attempt: number }) => [e.start, e.producer_attempt])).toEqual([['5000', 1]]); // the refused one is not there
    expect(t.attempts[0]).toMatchObject({ attempt: 1, outcome: 'timed_out' });
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h'))).status).toBe(201);
  });

  it('cancel before start: queued work is canceled at once; a started attempt fetches Canceled and reports it', async () => {
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h', 1, 'one_at_a_time'))).status).toBe(201);
    const running = await trigger('one_at_a_time');
    await started(running);
    const queued = await trigger('one_at_a_time');
    expect((await task(queued)).status).toBe('queued'); // max_concurrency 1

    const q = await call(url, 'POST', `/v1/tasks/${queued}/cancel`, { token: TOKEN });
    expect(q.body.status).toBe('canceled');

    const r = await call(url, 'POST', `/v1/tasks/${running}/cancel`, { token: TOKEN });
    expect(r.body).toMatchObject({ status: 'running', cancel_requested: true });
    const fetched = await fetchTask(running);
    expect(fetched.body.status).toBe('Canceled');
    const reported = await call(url, 'POST', '/internal/task-complete', { token: fetched.body.attempt_token, body: { status: 'canceled' } });
    expect(reported.body.status).toBe('canceled');
    expect((await task(running)).status).toBe('canceled');
    expect((await task(queued)).attempts).toEqual([]); // it never started
  });

  it('batched fetch and completion answer each item in its place, and refuse a bad batch whole', async () => {
    const [a, b, c] = [await trigger(), await trigger(), await trigger()];
    for (const id of [a, b, c]) await started(id);
    const bToken = (await fetchTask(b)).body.attempt_token; // b is already bound
    const unknown = '00000000-0000-4000-8000-000000000000';
    const fetched = await call(url, 'POST', '/internal/task-fetch-batch', { token: platform, body: { task_ids: [a, b, unknown, c] } });
    expect(fetched.status).toBe(200);
    const [fa, fb, fu, fc] = fetched.body.tasks;
    expect(fa).toMatchObject({ status: 'Ready', task_id: a, attempt: 1 });
    expect(fb).toMatchObject({ task_id: b, status_code: 409, error: { code: 'stale_attempt' } });
    expect(fb.error.message).toContain('already fetched');
    expect(fu).toMatchObject({ task_id: unknown, status_code: 404, error: { code: 'task_not_found' } });
    expect(fc).toMatchObject({ status: 'Ready', task_id: c });
    expect(new Set([fa.attempt_token, fc.attempt_token, bToken]).size).toBe(3);
    // Bound once: a second batch fetch of the same tasks is refused for each.
    const again = await call(url, 'POST', '/internal/task-fetch-batch', { token: platform, body: { task_ids: [a, c] } });
    expect(again.body.tasks.map((t: { error: { code: string } }) => t.error.code)).toEqual(['stale_attempt', 'stale_attempt']);

    // Refused whole, naming the field: user token, attempt token, bad ids, duplicates, too many.
    expect((await call(url, 'POST', '/internal/task-fetch-batch', { token: TOKEN, body: { task_ids: [a] } })).status).toBe(401);
    expect((await call(url, 'POST', '/internal/task-complete-batch', { token: bToken, body: { completions: [] } })).status).toBe(401);
    const badIds = await call(url, 'POST', '/internal/task-fetch-batch', { token: platform, body: { task_ids: [a, 'nope'] } });
    expect(badIds.status).toBe(400);
    expect(badIds.body.error.details).toEqual([{ field: 'task_ids[1]', reason: 'must be a UUID' }]);
    const tooMany = await call(url, 'POST', '/internal/task-fetch-batch', { token: platform, body: { task_ids: Array.from({ length: 101 }, () => unknown) } });
    expect(tooMany.status).toBe(400);
    const badBatch = await call(url, 'POST', '/internal/task-complete-batch', {
      token: platform,
      body: { completions: [{ attempt_token: fa.attempt_token, status: 'succeeded' }, { attempt_token: fa.attempt_token, status: 'done', extra: 1 }, { attempt_token: fc.attempt_token, status: 'succeeded', events: [{ output: 0 }] }] },
    });
    expect(badBatch.status).toBe(400);
    expect(badBatch.body.error.details.map((d: { field: string }) => d.field)).toEqual(['completions[1].extra', 'completions[1].attempt_token', 'completions[1].status', 'completions[2].events[0]']);
    expect((await task(a)).status).toBe('running'); // nothing of the refused batch was applied

    // One call: a succeeds plainly, b fails (queued for retry), c succeeds with final events, a forged token is refused.
    const done = await call(url, 'POST', '/internal/task-complete-batch', {
      token: platform,
      body: {
        completions: [
          { attempt_token: fa.attempt_token, status: 'succeeded' },
          { attempt_token: bToken, status: 'failed', error: 'boom' },
          { attempt_token: fc.attempt_token, status: 'succeeded', events: [range(0), range(1000)] },
          { attempt_token: 'tra_forged', status: 'succeeded' },
        ],
      },
    });
    expect(done.status).toBe(200);
    expect(done.body.results).toEqual([
      { status: 'succeeded', accepted: 0 },
      { status: 'queued', accepted: 0 },
      { status: 'succeeded', accepted: 2 },
      { status_code: 401, error: { code: 'unauthenticated', message: 'attempt token is unknown' } },
    ]);
    expect((await task(a)).status).toBe('succeeded');
    expect((await task(b)).attempts[0]).toMatchObject({ outcome: 'failed', error: 'boom' });
    expect((await task(c)).events).toHaveLength(2);
    // Completed once: the same completions again are each refused as stale.
    const twice = await call(url, 'POST', '/internal/task-complete-batch', { token: platform, body: { completions: [{ attempt_token: fa.attempt_token, status: 'succeeded' }] } });
    expect(twice.body.results[0]).toMatchObject({ status_code: 409, error: { code: 'stale_attempt' } });
  });


  it('the hot routes, served ahead of the framework, answer exactly as the framework does', async () => {
    // A query string sends a hot route through Express and Nest (InternalFastPath serves exact paths only).
    const both = async (path: string, options: Parameters<typeof call>[3]) => {
      const fast = await call(url, 'POST', path, options);
      const framework = await call(url, 'POST', `${path}?via=framework`, options);
      return { fast, framework };
    };
    const cases: [string, Parameters<typeof call>[3], number][] = [
      ['/internal/task-claim', { token: platform, body: { max: 0, wait_ms: -1, extra: 1 } }, 400],
      ['/internal/task-claim', { token: platform, body: { max: 0, wait_ms: -1 } }, 400],
      ['/internal/task-claim', { token: platform, rawBody: '[1]' }, 400],
      ['/internal/task-claim', { token: TOKEN, body: { max: 1 } }, 401],
      ['/internal/task-claim', { token: 'tra_forged', body: { max: 1 } }, 401],
      ['/internal/task-claim', { body: { max: 1 } }, 401],
      ['/internal/task-complete-batch', { token: platform, body: { completions: [] } }, 400],
      ['/internal/task-complete-batch', { token: platform, body: { completions: [{ attempt_token: 'tra_forged', status: 'succeeded' }] } }, 200],
      ['/internal/events', { token: platform, body: { events: [] } }, 401],
      ['/internal/events', { token: 'tra_forged', body: { events: [{ output: 0 }] } }, 400],
      ['/internal/events', { token: 'tra_forged', body: { events: [{ output: 0, partition_key: 'p' }] } }, 401],
      ['/internal/events', { token: 'tra_forged', body: { events: [], more: true } }, 400],
      ['/internal/task-complete', { token: 'tra_forged', body: { status: 'done', error: 7 } }, 400],
      ['/internal/task-complete', { token: 'tra_forged', body: { status: 'succeeded' } }, 401],
    ];
    for (const [path, options, status] of cases) {
      const { fast, framework } = await both(path, { ...options, headers: { 'x-request-id': 'hot-route-check' } });
      expect({ path, status: fast.status, body: fast.body }).toEqual({ path, status, body: framework.body });
      expect(framework.status).toBe(status);
      expect(fast.headers.get('content-type')).toBe(framework.headers.get('content-type'));
      expect(fast.headers.get('x-request-id')).toBe('hot-route-check');
    }
    // Malformed JSON is refused the same way (the parser's own wording may differ).
    const { fast, framework } = await both('/internal/task-claim', { token: platform, rawBody: '{"max": 1' });
    expect([fast.status, fast.body.error.code, framework.status, framework.body.error.code]).toEqual([400, 'malformed_json', 400, 'malformed_json']);
    // A body the hot route does not read itself (not JSON) goes to the framework, which refuses it as before.
    const text = await call(url, 'POST', '/internal/task-claim', { token: platform, rawBody: 'max=1', headers: { 'content-type': 'text/plain' } });
    expect([text.status, text.body.error.code]).toEqual([400, 'validation_failed']);
    // Both paths are counted under the route's one label. Express counts a body it cannot parse as
    // "unmatched", the hot route under its path: without the hot routes this would count 7.
    const metrics = (await call(url, 'GET', '/metrics')).text;
    const served = Number(/trace_http_requests_total\{method="POST",route="\/internal\/task-claim",status="400"\} (\d+)/.exec(metrics)?.[1]);
    expect(served).toBeGreaterThanOrEqual(2 * 3 + 1 + 1);
  });
});

/**
 * The local transport's claim, in a process of its own: a claim takes the oldest claimable
 * attempts of any DAG, and in the suite above retries of earlier tests' attempts become claimable
 * at any moment.
 */
describe('task-claim (the local transport)', () => {
  let trace: TraceProcess;
  let url: string;
  let platform: string;
  let databaseUrl: string;

  const task = async (id: string) => (await call(url, 'GET', `/v1/tasks/${id}`, { token: TOKEN })).body;
  const trigger = async (dag: string) => (await call(url, 'POST', `/v1/dags/${dag}/jobs/source/runs`, { token: TOKEN })).body.task_id as string;
  const fetchTask = (id: string) => call(url, 'GET', `/internal/task-fetch?task_id=${id}`, { token: platform });
  const started = (id: string) => waitFor(async () => ((await task(id)).status === 'running' ? true : undefined), `${id} to start`, 30_000);

  beforeAll(async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-claim-'));
    await chmod(dataDir, 0o755);
    trace = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: (databaseUrl = await createTestDatabase('claim')), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_CODE_ROOT: CODE_ROOT },
    });
    url = trace.baseUrl;
    platform = readFileSync(join(dataDir, 'internal-token'), 'utf8').trim();
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h', 5, 'waited'))).status).toBe(201);
  });
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });
  // Each test starts with nothing claimable: what an earlier test left started is taken first.
  beforeEach(async () => {
    while ((await call(url, 'POST', '/internal/task-claim', { token: platform, body: { max: 100 } })).body.tasks.length > 0);
  });

  it('binds the oldest started attempts, each to one caller only, with their payloads', async () => {
    const claim = (max: unknown, token = platform, extra: object = {}) => call(url, 'POST', '/internal/task-claim', { token, body: { max, ...extra } });
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h', 5, 'claimed'))).status).toBe(201);
    const ids = [await trigger('claimed'), await trigger('claimed'), await trigger('claimed')];
    for (const id of ids) await started(id);

    // Two wrappers claiming at once share nothing (SKIP LOCKED), and together take all three.
    const [first, second] = await Promise.all([claim(2), claim(2)]);
    expect([first.status, second.status]).toEqual([200, 200]);
    const claimed = [...first.body.tasks, ...second.body.tasks];
    expect(claimed.map((t: { task_id: string }) => t.task_id).sort()).toEqual([...ids].sort());
    for (const t of claimed) expect(t).toMatchObject({ status: 'Ready', attempt: 1, job: { name: 'source' }, dag: { name: 'claimed' } });
    expect(new Set(claimed.map((t: { attempt_token: string }) => t.attempt_token)).size).toBe(3);
    expect((await claim(5)).body.tasks).toEqual([]);

    // A claimed attempt is bound: fetching it again is refused; its token completes it.
    expect((await fetchTask(ids[0]!)).body.error.code).toBe('stale_attempt');
    const mine = claimed.find((t: { task_id: string }) => t.task_id === ids[0])!;
    expect((await call(url, 'POST', '/internal/task-complete', { token: mine.attempt_token, body: { status: 'succeeded' } })).body.status).toBe('succeeded');

    // Refused, naming the field: bad max, unknown fields; user tokens and attempt tokens.
    for (const bad of [0, 101, 2.5, '2', null]) {
      const res = await claim(bad);
      expect(res.status).toBe(400);
      expect(res.body.error.details).toEqual([{ field: 'max', reason: 'must be an integer from 1 to 100' }]);
    }
    const extra = await claim(1, platform, { task_ids: [] });
    expect(extra.status).toBe(400);
    expect(extra.body.error.details).toEqual([{ field: 'task_ids', reason: 'is not a known field' }]);
    expect((await claim(1, TOKEN)).status).toBe(401);
    expect((await claim(1, mine.attempt_token)).status).toBe(401);
    for (const bad of [-1, 20_001, 1.5]) expect((await claim(1, platform, { wait_ms: bad })).body.error.details).toEqual([{ field: 'wait_ms', reason: 'must be an integer from 0 to 20000' }]);
  });

  // A claim (and, for the metering loop, a start) is delivery bookkeeping: it commits without
  // waiting for its WAL flush (ADR 0014, ADR 0012). Never anything after it on the connection.
  it.each<[string, string, () => unknown[]]>([
    ['a claim', TASK_CLAIM_SQL, () => [1, [randomBytes(32)], null]],
    ['the metering loop\'s start', METER_START_SQL, () => [randomUUID(), 'source', randomUUID(), 1, 60, 'local']],
  ])('%s commits asynchronously, and only its own transaction', async (_name, text, params) => {
    const db = await connect(databaseUrl);
    try {
      await db.query({ name: 'bookkeeping', text, values: params() });
      expect((await db.query(`SHOW synchronous_commit`)).rows).toEqual([{ synchronous_commit: 'on' }]);
      // Inside a transaction the setting lasts until its end, which is when it applies.
      await db.query('BEGIN');
      await db.query({ name: 'bookkeeping', text, values: params() });
      expect((await db.query(`SHOW synchronous_commit`)).rows).toEqual([{ synchronous_commit: 'off' }]);
      await db.query('COMMIT');
      expect((await db.query(`SHOW synchronous_commit`)).rows).toEqual([{ synchronous_commit: 'on' }]);
    } finally {
      await db.end();
    }
  });

  it('a wrapper has one completion request in flight; completions made meanwhile go together in the next, at most 100 a request', async () => {
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h', 3, 'serially'))).status).toBe(201);
    const ids = [await trigger('serially'), await trigger('serially'), await trigger('serially')];
    for (const id of ids) await started(id);
    const tokens = new Map<string, string>();
    await waitFor(async () => {
      for (const t of (await call(url, 'POST', '/internal/task-claim', { token: platform, body: { max: 10 } })).body.tasks) tokens.set(t.task_id, t.attempt_token);
      return ids.every((id) => tokens.has(id)) || undefined;
    }, 'the three runs to be claimed');
    const client = new DispatcherClient(url, platform, '');
    const db = await connect(databaseUrl);
    try {
      // The first completion is held up in the dispatcher: the test locks its task's row.
      await db.query('BEGIN');
      await db.query(`SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE`, [ids[0]]);
      const first = client.complete(tokens.get(ids[0]!)!, 'succeeded', []);
      await new Promise((r) => setTimeout(r, 200));
      const rest = [client.complete(tokens.get(ids[1]!)!, 'succeeded', []), client.complete(tokens.get(ids[2]!)!, 'succeeded', [])];
      await new Promise((r) => setTimeout(r, 300));
      // Not sent while the first is in flight.
      const status = async () => (await db.query(`SELECT id, status FROM tasks WHERE id = ANY ($1) ORDER BY id`, [ids])).rows.map((r) => r.status);
      expect(await status()).toEqual(['running', 'running', 'running']);
      await db.query('COMMIT');
      expect((await Promise.all([first, ...rest])).map((r) => r.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
      expect(await status()).toEqual(['succeeded', 'succeeded', 'succeeded']);
      // 101 completions made together: two requests (a batch above 100 would be refused whole);
      // each unknown token gets its own answer.
      const unknown = Array.from({ length: 101 }, () => client.complete(attemptToken(randomUUID(), 1, randomBytes(32)), 'succeeded', []).catch((err: Error) => err.message));
      expect(new Set(await Promise.all(unknown))).toEqual(new Set(['attempt token is unknown']));
    } finally {
      client.close();
      await db.end();
    }
  });

  it('with wait_ms is a long poll: answered as soon as an attempt starts, empty when the wait is over', async () => {
    const claim = (body: object) => call(url, 'POST', '/internal/task-claim', { token: platform, body });

    // Nothing to claim: the answer comes when the wait is over, empty.
    let t0 = Date.now();
    expect((await claim({ max: 1, wait_ms: 400 })).body.tasks).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390);

    // A waiting claim gets a run started while it waits, long before its wait is over.
    t0 = Date.now();
    const waiting = claim({ max: 1, wait_ms: 15_000 });
    await new Promise((r) => setTimeout(r, 300));
    const id = (await call(url, 'POST', '/v1/dags/waited/jobs/source/runs', { token: TOKEN })).body.task_id as string;
    const answered = await waiting;
    expect(answered.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual([id]);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  /** A new DAG `name` and a running source run of it, claimed by the test: its attempt token posts events. */
  const runningSource = async (name: string) => {
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h', 5, name))).status).toBe(201);
    const source = await trigger(name);
    await started(source);
    const [producer] = (await call(url, 'POST', '/internal/task-claim', { token: platform, body: { max: 1 } })).body.tasks;
    expect(producer.task_id).toBe(source);
    return { source, producer };
  };

  it('a waiting claim is answered by the statement that stores the event and starts its task (one transaction)', async () => {
    const claim = (body: object) => call(url, 'POST', '/internal/task-claim', { token: platform, body });
    const { source, producer } = await runningSource('answered');

    // A wrapper waits; the event's reader task is started, claimed for it and answered at once.
    const waiting = claim({ max: 2, wait_ms: 15_000 });
    await new Promise((r) => setTimeout(r, 300));
    const posted = await call(url, 'POST', '/internal/events', { token: producer.attempt_token, body: { events: [{ output: 0, start: 0, end: 999 }] } });
    expect(posted.body).toEqual({ accepted: 1, duplicates: 0 });
    const answered = (await waiting).body.tasks;
    const readers = (await call(url, 'GET', '/v1/tasks?dag=answered&job=reader', { token: TOKEN })).body;
    const reader = (readers.tasks ?? readers)[0].id as string;
    expect(answered).toHaveLength(1);
    expect(answered[0]).toMatchObject({ task_id: reader, attempt: 1, job: { name: 'reader' }, input: { event: { start: '0', end: '999' } } });
    const db = await connect(databaseUrl);
    try {
      // The attempt was bound to the claim by the transaction that stored the event (same xmin).
      const { rows } = await db.query(
        `SELECT (SELECT xmin::text FROM events WHERE producer_task_id = $1) AS event_tx, (SELECT xmin::text FROM task_attempts WHERE task_id = $2) AS bound_tx`,
        [source, reader],
      );
      expect(rows[0].bound_tx).toBe(rows[0].event_tx);
      expect((await call(url, 'POST', '/internal/task-complete', { token: answered[0].attempt_token, body: { status: 'succeeded' } })).body.status).toBe('succeeded');

      // trace_claim reads the same payload as task-fetch's statement (PAYLOAD_READ_SQL) for the same attempt.
      const another = await trigger('answered');
      await started(another);
      await db.query('BEGIN');
      const hash = createHash('sha256').update(`tra_${randomBytes(32).toString('base64url')}`).digest();
      const claimed = (await db.query(`SELECT * FROM trace_claim(1, $1, NULL)`, [[hash]])).rows;
      const read = (await db.query(PAYLOAD_READ_SQL, [[another]])).rows;
      await db.query('ROLLBACK');
      expect(claimed).toHaveLength(1);
      const { n, ...payload } = claimed[0];
      expect(n).toBe('1');
      expect(payload).toEqual(read[0]);
    } finally {
      await db.end();
    }
  });

  it('while work is sparse a wrapper keeps a second long poll waiting, so the next event is answered without a new poll', async () => {
    const { source, producer } = await runningSource('sparse');
    const post = (start: number) => call(url, 'POST', '/internal/events', { token: producer.attempt_token, body: { events: [{ output: 0, start, end: start + 999 }] } });
    // The wrapper's own transport and client (the wrapper role's receive loop calls exactly this).
    const transport = new LocalTransport(10_000);
    const client = new DispatcherClient(url, platform, '');
    const db = await connect(databaseUrl);
    const boundWithItsEvent = async (start: number) => {
      const { rows } = await db.query(
        `SELECT e.xmin::text = a.xmin::text AS same FROM events e JOIN tasks t ON t.event_id = e.id JOIN task_attempts a ON a.task_id = t.id
          WHERE e.producer_task_id = $1 AND e.range_start = $2`,
        [source, start],
      );
      return rows[0]?.same;
    };
    try {
      // A first receive (one long poll for all 8) comes back short: one task. Work is sparse.
      const first = transport.receive(8, client);
      await new Promise((r) => setTimeout(r, 300));
      await post(0);
      const [t0] = await first;
      expect(t0!.payload!.input?.event.start).toBe('0');
      expect(await boundWithItsEvent(0)).toBe(true);
      await client.complete(t0!.payload!.attempt_token, 'succeeded', []); // the reader job runs one task at a time
      // Now two polls go out (1 + 7); the event's statement answers one of them.
      const second = transport.receive(8, client);
      await new Promise((r) => setTimeout(r, 300));
      await post(1000);
      const [t1] = await second;
      expect(t1!.payload!.input?.event.start).toBe('1000');
      expect(await boundWithItsEvent(1000)).toBe(true);
      await client.complete(t1!.payload!.attempt_token, 'succeeded', []);
      // The other is still waiting, with no new poll from the wrapper: the next event's statement
      // answers it. A poll still out when the wrapper stops receiving is handed over by drain().
      await new Promise((r) => setTimeout(r, 300));
      await post(2000);
      const drained = await transport.drain();
      expect(drained.map((m) => m.payload!.input?.event.start)).toEqual(['2000']);
      expect(await boundWithItsEvent(2000)).toBe(true);
    } finally {
      client.close();
      await db.end();
    }
  });

  it('the statement that stores events or completes attempts also starts the next tasks (one transaction, one timestamp)', async () => {
    const claim = (max: number) => call(url, 'POST', '/internal/task-claim', { token: platform, body: { max } });
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h', 1, 'serial'))).status).toBe(201);
    // Events: the reader's task is started by the statement that stores the event.
    const source = await trigger('serial');
    await started(source);
    const [producer] = (await claim(1)).body.tasks;
    expect(producer.task_id).toBe(source);
    await call(url, 'POST', '/internal/events', { token: producer.attempt_token, body: { events: [{ output: 0, start: 0, end: 999 }] } });
    const event = (await task(source)).events[0];
    const readers = (await call(url, 'GET', '/v1/tasks?dag=serial&job=reader', { token: TOKEN })).body;
    const reader = await task((readers.tasks ?? readers)[0].id);
    expect(reader.attempts[0].started_at).toBe(event.created_at);

    // Completions: with max_concurrency 1, the queued run is started by the statement that completes the running one.
    const second = await trigger('serial');
    expect((await task(second)).status).toBe('queued');
    await call(url, 'POST', '/internal/task-complete', { token: producer.attempt_token, body: { status: 'succeeded' } });
    const [first, next] = [await task(source), await task(second)];
    expect(next.status).toBe('running');
    expect(next.attempts[0].started_at).toBe(first.attempts[0].finished_at);
    // Metering recorded the job's queue head: the newest task it started.
    const db = await connect(databaseUrl);
    try {
      const { rows } = await db.query(
        `SELECT h.task_id FROM job_queue_heads h JOIN dags g ON g.id = h.dag_id WHERE g.name = 'serial' AND h.job_name = 'source'`,
      );
      expect(rows).toEqual([{ task_id: second }]);
    } finally {
      await db.end();
    }
  });

  it('a completion meters from the job\'s queue head; a task queued behind it is started by the metering loop', async () => {
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG('1h', 1, 'behind'))).status).toBe(201);
    const claim = (max: number) => call(url, 'POST', '/internal/task-claim', { token: platform, body: { max } });
    const first = await trigger('behind');
    await started(first);
    const [running] = (await claim(1)).body.tasks;
    const second = await trigger('behind');
    expect((await task(second)).status).toBe('queued');
    // As if a newer task had been started already: the queued one now sorts behind the head, as a
    // retry (whose created_at is its first attempt's) or a late-committed task would.
    const db = await connect(databaseUrl);
    try {
      await db.query(
        `UPDATE job_queue_heads h SET created_at = 'infinity' FROM dags g WHERE g.id = h.dag_id AND g.name = 'behind' AND h.job_name = 'source'`,
      );
      expect((await db.query(`SELECT count(*)::int AS n FROM job_queue_heads h JOIN dags g ON g.id = h.dag_id WHERE g.name = 'behind'`)).rows).toEqual([{ n: 1 }]);
    } finally {
      await db.end();
    }
    await call(url, 'POST', '/internal/task-complete', { token: running.attempt_token, body: { status: 'succeeded' } });
    const done = await task(first);
    // The completion's statement did not start it (it reads the queue after the head) ...
    // ... the metering loop's pass, which reads every job's queue from its start, does.
    await started(second);
    const next = await task(second);
    expect(next.attempts[0].started_at).not.toBe(done.attempts[0].finished_at);
  });

  it('fails an attempt whose payload cannot be built (a secret deleted after deploy) with the reason, and it is retried', async () => {
    const claim = (max: number) => call(url, 'POST', '/internal/task-claim', { token: platform, body: { max } });
    expect((await call(url, 'PUT', '/v1/secrets/claim_key', { token: TOKEN, body: { value: 'k-123' } })).status).toBe(201);
    const pooled = `name: pooled
worker_pools:
  - name: rpc
    slots:
      - env: {RPC_URL: "http://rpc.invalid"}
        secret_env: {RPC_KEY: claim_key}
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    worker_pool: rpc
    max_attempts: 2
    outputs: [${OUT}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, pooled)).status).toBe(201);
    // While the secret exists, the claimed payload carries the slot's env and the secret's value.
    const ok = await trigger('pooled');
    await started(ok);
    const [first] = (await claim(1)).body.tasks;
    expect(first).toMatchObject({ task_id: ok, slot: { pool: 'rpc', index: 0, env: { RPC_URL: 'http://rpc.invalid' }, secret_env: { RPC_KEY: 'k-123' } } });
    await call(url, 'POST', '/internal/task-complete', { token: first.attempt_token, body: { status: 'succeeded' } });

    expect((await call(url, 'DELETE', '/v1/secrets/claim_key', { token: TOKEN })).status).toBe(204);
    const broken = await trigger('pooled');
    await started(broken);
    expect((await claim(1)).body.tasks).toEqual([]); // not handed out ...
    const t = await task(broken);
    expect(t.attempts[0]).toMatchObject({ attempt: 1, outcome: 'failed' }); // ... failed with the reason, and queued for its retry
    expect(t.attempts[0].error).toBe('the task could not be prepared: secret "claim_key" for RPC_KEY was deleted after deploy');
    expect(t.status).toBe('queued');
  });
});
