import { ChangeMessageVisibilityCommand, CreateQueueCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mkdtempSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { taskFinished } from '../support/tasks';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_sqs-test-dev-token-00000000000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
// The SDK reads credentials from the environment; the local SQS server accepts any.
const AWS_ENV = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };

describe('the SQS transport (against fauxqs on loopback)', () => {
  let fauxqs: { address: string; stop(): Promise<void> };
  const procs: TraceProcess[] = [];

  beforeAll(async () => {
    const { startFauxqs } = (await import('fauxqs')) as { startFauxqs: (o: object) => Promise<{ address: string; stop(): Promise<void> }> };
    fauxqs = await startFauxqs({ port: 0, host: '127.0.0.1', logger: false });
  });
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await fauxqs.stop();
  });

  it('relays a thin {"task_id"} message; the wrapper fetches the payload and runs it', async () => {
    const sqs = new SQSClient({ region: 'us-east-1', endpoint: fauxqs.address, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: 'trace-tasks' }));
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-sqs-'));
    await chmod(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('sqs');
    const common = { ...AWS_ENV, DATABASE_URL: databaseUrl, TRACE_DISPATCH_TRANSPORT: 'sqs', TRACE_SQS_QUEUE_URL: QueueUrl!, TRACE_AWS_ENDPOINT: fauxqs.address, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '1000' };
    const dispatcher = await startTrace({ args: ['--role', 'registry,dispatcher'], env: { ...common, TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true' } });
    procs.push(dispatcher);
    const url = dispatcher.baseUrl;
    expect((await call(url, 'GET', '/health')).body.loops).toContain('dispatcher.relay');

    const dag = `name: queued
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    config: {count: 2}
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const id = (await call(url, 'POST', '/v1/dags/queued/jobs/source/runs', { token: TOKEN })).body.task_id as string;

    // No wrapper yet: read the message ourselves. It carries the task id and nothing else.
    const received = await waitFor(async () => {
      const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 1 }));
      return r.Messages?.[0];
    }, 'the dispatch message', 30_000);
    expect(JSON.parse(received.Body!)).toEqual({ task_id: id });
    await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl, ReceiptHandle: received.ReceiptHandle, VisibilityTimeout: 0 }));

    const internalToken = readFileSync(join(dataDir, 'internal-token'), 'utf8').trim();
    const wrapper = await startTrace({ args: ['--role', 'wrapper'], env: { ...common, TRACE_DISPATCHER_URL: url, TRACE_INTERNAL_TOKEN: internalToken } });
    procs.push(wrapper);
    const done = await taskFinished(url, TOKEN, id);
    expect(done.status).toBe('succeeded');
    expect(done.events).toHaveLength(2);
    expect(done.attempts).toHaveLength(1);
    sqs.destroy();
  });
});
