import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { jobTasksSucceeded, taskFinished } from '../support/tasks';

const TOKEN = 'trc_rust-test-dev-token-0000000000';
const ROOT = join(__dirname, '..', '..');

/** The Rust runtime: a compiled binary speaking the stdio protocol, under the same sandbox. */
describe('Rust user code', () => {
  let trace: TraceProcess;
  let url: string;

  beforeAll(async () => {
    const codeRoot = mkdtempSync(join(tmpdir(), 'trace-rust-code-'));
    chmodSync(codeRoot, 0o755);
    execFileSync('rustc', ['-O', '-o', join(codeRoot, 'probe'), join(__dirname, '..', 'fixtures', 'code', 'probe.rs')]);
    execFileSync('rustc', ['-O', '-o', join(codeRoot, 'transfer_counter'), join(ROOT, 'seeds', 'operators', 'transfer_counter.rs')]);
    copyFileSync(join(__dirname, '..', 'fixtures', 'code', 'emit-source.js'), join(codeRoot, 'emit-source.js'));
    trace = await startTrace({ env: { DATABASE_URL: await createTestDatabase('rust'), TRACE_DEV_TOKEN: TOKEN, TRACE_CODE_ROOT: codeRoot, TRACE_DISPATCH_POLL_MS: '200' } });
    url = trace.baseUrl;
  }, 180_000);
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  const finished = (id: string) => taskFinished(url, TOKEN, id);

  it('the seed operator consumes range events and emits its own', async () => {
    const dag = `name: rusty
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    config: {count: 2}
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]
  - name: count
    operator: user
    language: rust
    entry_point: transfer_counter
    inputs: [{from: {job: source}}]
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    await finished((await call(url, 'POST', '/v1/dags/rusty/jobs/source/runs', { token: TOKEN })).body.task_id);
    const tasks = await jobTasksSucceeded(url, TOKEN, 'rusty', 'count', 2);
    const t = (await call(url, 'GET', `/v1/tasks/${tasks[0]!.id}`, { token: TOKEN })).body;
    expect(t.events).toHaveLength(1);
    expect(t.events[0].payload.source_event).toBe(t.event_id);
  });

  it('cannot see the wrapper\'s credentials or reach /internal/*', async () => {
    const dag = `name: rust_probe
jobs:
  - name: probe
    operator: user
    language: rust
    entry_point: probe
    config: {internal_url: "${url}"}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const done = await finished((await call(url, 'POST', '/v1/dags/rust_probe/jobs/probe/runs', { token: TOKEN })).body.task_id);
    expect(done.status).toBe('succeeded');
    const report = done.events[0].payload;
    expect(report.leaked).toEqual([]);
    expect(report.env_keys).toEqual(['HOME', 'LANG', 'PATH', 'TMPDIR']);
    expect(report.internal).toMatch(/^unreachable/);
  });
});
