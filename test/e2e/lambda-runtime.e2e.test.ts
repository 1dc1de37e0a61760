import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { jobTasksSucceeded } from '../support/tasks';

const TOKEN = 'trc_lambda-test-dev-token-000000000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';

/** runtime: lambda jobs are invoked by the dispatcher with the full payload — no wrapper role involved. */
describe('runtime: lambda (local invoker)', () => {
  let trace: TraceProcess;
  let url: string;

  beforeAll(async () => {
    trace = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: await createTestDatabase('lambda'), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '200' },
    });
    url = trace.baseUrl;
  });
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it('runs lambda jobs in JS and Python through the dispatcher-invoked handler, with the task-fetch payload shape', async () => {
    const dag = `name: serverless
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    runtime: lambda
    config: {count: 3}
    outputs: [${OUT}]
  - name: audit
    operator: user
    language: python
    entry_point: consumer.py
    runtime: lambda
    inputs: [{from: {job: source}}]
    outputs: [${OUT}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const id = (await call(url, 'POST', '/v1/dags/serverless/jobs/source/runs', { token: TOKEN })).body.task_id as string;
    const audits = await jobTasksSucceeded(url, TOKEN, 'serverless', 'audit', 3);
    expect(audits).toHaveLength(3);
    expect((await call(url, 'GET', `/v1/tasks/${id}`, { token: TOKEN })).body.events).toHaveLength(3);

    const invoked = trace.logs.find((l) => l.context === 'LocalLambda' && l.msg === 'invoked' && l.task_id === id);
    expect(invoked?.payload_keys).toEqual(['attempt', 'attempt_token', 'dag', 'deadline_at', 'idempotency', 'input', 'job', 'org_id', 'outputs', 'slot', 'status', 'task_id']);
  });
});
