import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { jobTasksSucceeded, taskFinished } from '../support/tasks';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_dispatch-test-dev-token-000000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';

const FLOW = `name: flow
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    config: {count: 5}
    outputs: [${OUT}]
  - name: double
    operator: user
    language: javascript
    entry_point: consumer.js#handler
    inputs: [{from: {job: source, output: 0}}]
    outputs: [${OUT}]
  - name: audit
    operator: user
    language: python
    entry_point: consumer.py
    inputs: [{from: {job: source, output: 0}}]
    outputs: [${OUT}]
`;

const taskDone = (url: string, id: string) => taskFinished(url, TOKEN, id);

async function tasksOf(url: string, dag: string, job: string) {
  return (await call(url, 'GET', `/v1/tasks?dag=${dag}&job=${job}&limit=1000`, { token: TOKEN })).body as { id: string; status: string }[];
}

describe('events → tasks → wrapper, all in one process', () => {
  let trace: TraceProcess;
  let url: string;
  let databaseUrl: string;

  beforeAll(async () => {
    databaseUrl = await createTestDatabase('dispatch');
    trace = await startTrace({ env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '200' } });
    url = trace.baseUrl;
  });
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it('a triggered source emits many events; each event makes exactly one task per consuming job, in JS and Python', async () => {
    expect((await postYaml(url, '/v1/dags', TOKEN, FLOW)).status).toBe(201);
    const run = await call(url, 'POST', '/v1/dags/flow/jobs/source/runs', { token: TOKEN });
    expect(run.status).toBe(201);
    expect(run.body.producer_task_id).toBe(run.body.task_id);
    const source = await taskDone(url, run.body.task_id);
    expect(source.status).toBe('succeeded');
    expect(source.events.map((e: { start: string; end: string }) => `${e.start}-${e.end}`)).toEqual(['0-999', '1000-1999', '2000-2999', '3000-3999', '4000-4999']);

    for (const job of ['double', 'audit']) {
      const tasks = await jobTasksSucceeded(url, TOKEN, 'flow', job, 5);
      expect(tasks).toHaveLength(5);
    }
    const audit = await call(url, 'GET', `/v1/tasks/${(await tasksOf(url, 'flow', 'audit'))[0]!.id}`, { token: TOKEN });
    expect(audit.body.events[0].payload.lang).toBe('python');
    expect(audit.body.attempts).toEqual([expect.objectContaining({ attempt: 1, outcome: 'succeeded' })]);
  });

  it('user code (JS and Python) cannot see the wrapper\'s credentials or reach /internal/*', async () => {
    const probe = (lang: string, file: string) => `name: probe_${lang}
jobs:
  - name: probe
    operator: user
    language: ${lang}
    entry_point: ${file}
    config: {internal_url: "${url}"}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    for (const [lang, file] of [['javascript', 'probe.js'], ['python', 'probe.py']] as const) {
      expect((await postYaml(url, '/v1/dags', TOKEN, probe(lang, file))).status).toBe(201);
      const run = await call(url, 'POST', `/v1/dags/probe_${lang}/jobs/probe/runs`, { token: TOKEN });
      const done = await taskDone(url, run.body.task_id);
      expect(done.status).toBe('succeeded');
      const report = done.events[0].payload;
      expect(report.leaked).toEqual([]);
      expect(report.env_keys).toEqual(['HOME', 'LANG', 'PATH', 'TMPDIR']);
      expect(report.internal).toMatch(/^unreachable/);
      if (process.getuid?.() === 0) expect(report.uid).not.toBe(0);
    }
  });

  it('never runs more than min(max_concurrency, pool size) at once; each running task holds its own slot; slots are released', async () => {
    for (const name of ['rpc_key_a', 'rpc_key_b']) await call(url, 'PUT', `/v1/secrets/${name}`, { token: TOKEN, body: { value: `secret-${name}` } });
    const dag = `name: pooled
worker_pools:
  - name: rpc
    slots:
      - {env: {RPC_URL: "http://slot-0"}, secret_env: {RPC_KEY: rpc_key_a}}
      - {env: {RPC_URL: "http://slot-1"}, secret_env: {RPC_KEY: rpc_key_b}}
jobs:
  - name: fetch
    operator: user
    language: javascript
    entry_point: sleepy.js
    worker_pool: rpc
    scaling: {max_concurrency: 5}
    config: {ms: 400}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const db = await connect(databaseUrl);
    try {
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push((await call(url, 'POST', '/v1/dags/pooled/jobs/fetch/runs', { token: TOKEN })).body.task_id);
      let maxRunning = 0;
      const sampling = (async () => {
        for (;;) {
          const { rows } = await db.query(
            `SELECT count(*)::int AS running, count(DISTINCT l.slot)::int AS slots, count(l.slot)::int AS leases
               FROM tasks t JOIN dags g ON g.id = t.dag_id LEFT JOIN worker_slot_leases l ON l.task_id = t.id
              WHERE g.name = 'pooled' AND t.status = 'running'`,
          );
          maxRunning = Math.max(maxRunning, rows[0].running);
          expect(rows[0].slots).toBe(rows[0].leases); // distinct slots
          expect(rows[0].leases).toBe(rows[0].running); // every running task holds one
          const { rows: left } = await db.query(`SELECT count(*)::int AS n FROM tasks WHERE id = ANY ($1) AND status NOT IN ('succeeded', 'failed', 'canceled')`, [ids]);
          if (left[0].n === 0) return;
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      await sampling;
      expect(maxRunning).toBe(2);
      const urls = new Set<string>();
      for (const id of ids) {
        const t = await call(url, 'GET', `/v1/tasks/${id}`, { token: TOKEN });
        expect(t.body.status).toBe('succeeded');
        urls.add(t.body.events[0].payload.rpc_url);
        expect(t.body.events[0].payload.has_key).toBe(true);
      }
      expect([...urls].sort()).toEqual(['http://slot-0', 'http://slot-1']);
      expect((await db.query('SELECT count(*)::int AS n FROM worker_slot_leases')).rows[0].n).toBe(0);
    } finally {
      await db.end();
    }
  });

  it('cancel during a run: the wrapper stops the operator and the task ends canceled', async () => {
    const dag = `name: slow
jobs:
  - name: nap
    operator: user
    language: javascript
    entry_point: sleepy.js
    config: {ms: 60000}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const run = await call(url, 'POST', '/v1/dags/slow/jobs/nap/runs', { token: TOKEN });
    await waitFor(() => trace.logs.some((l) => l.context === 'UserCode' && l.task_id === run.body.task_id && l.msg === 'started'), 'the operator to start', 30_000);
    const cancel = await call(url, 'POST', `/v1/tasks/${run.body.task_id}/cancel`, { token: TOKEN });
    expect(cancel.status).toBe(201);
    expect(cancel.body.cancel_requested).toBe(true);
    const done = await taskDone(url, run.body.task_id);
    expect(done.status).toBe('canceled');
    expect(done.events).toEqual([]);
    expect((await call(url, 'POST', `/v1/tasks/${run.body.task_id}/cancel`, { token: TOKEN })).status).toBe(409);
  });
});
