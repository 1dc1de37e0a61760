import { mkdtempSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { jobTasksSucceeded, taskFinished } from '../support/tasks';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_crash-test-dev-token-000000000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';

describe('a wrapper killed with SIGKILL mid-task', () => {
  const procs: TraceProcess[] = [];
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
  });

  it('is noticed, the attempt is retried on another wrapper, and downstream sees each event once', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-crash-'));
    await chmod(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('crash');
    const dispatcher = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: databaseUrl, TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_NODE_EXPIRY_MS: '2000', TRACE_REAPER_INTERVAL_MS: '200' },
    });
    procs.push(dispatcher);
    const url = dispatcher.baseUrl;
    const internalToken = readFileSync(join(dataDir, 'internal-token'), 'utf8').trim();
    const wrapperEnv = { DATABASE_URL: databaseUrl, TRACE_DISPATCHER_URL: url, TRACE_INTERNAL_TOKEN: internalToken, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '200' };

    const dag = `name: crashy
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    config: {count: 5, pause_after: 3, pause_ms: 4000}
    max_attempts: 3
    outputs: [${OUT}]
  - name: reader
    operator: user
    language: javascript
    entry_point: consumer.js
    inputs: [{from: {job: source, output: 0}}]
    outputs: [${OUT}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const first = await startTrace({ args: ['--role', 'wrapper'], env: wrapperEnv });
    procs.push(first);
    const id = (await call(url, 'POST', '/v1/dags/crashy/jobs/source/runs', { token: TOKEN })).body.task_id as string;

    // Attempt 1 has streamed its first three events when the operator pauses: kill its wrapper then.
    await waitFor(async () => ((await call(url, 'GET', `/v1/tasks/${id}`, { token: TOKEN })).body.events.length === 3 ? true : undefined), 'three events from attempt 1');
    first.child.kill('SIGKILL');
    await first.exited;

    const second = await startTrace({ args: ['--role', 'wrapper'], env: wrapperEnv });
    procs.push(second);
    const done = await taskFinished(url, TOKEN, id);
    expect(done.status).toBe('succeeded');

    expect(done.attempts.map((a: { outcome: string }) => a.outcome)).toEqual(['timed_out', 'succeeded']);
    expect(done.attempts[0].error).toBe('the wrapper running it stopped');
    // Attempt 2 re-emitted all five; the three attempt 1 had stored were recognised as duplicates.
    expect(done.events.map((e: { producer_attempt: number }) => e.producer_attempt)).toEqual([1, 1, 1, 2, 2]);
    const readers = await jobTasksSucceeded(url, TOKEN, 'crashy', 'reader', 5);
    expect(new Set(readers.map((r) => r.event_id)).size).toBe(5);
  });

  it('an attempt claimed by a wrapper that died is retried and run by another wrapper; a live claim is left alone', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-claim-'));
    await chmod(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('claim');
    const dispatcher = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: databaseUrl, TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true' },
    });
    procs.push(dispatcher);
    const url = dispatcher.baseUrl;
    const dag = `name: claims
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    config: {count: 1}
    scaling: {max_concurrency: 2}
    outputs: [${OUT}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const db = await connect(databaseUrl);
    try {
      const live = '00000000-0000-4000-8000-000000001100';
      await db.query(`INSERT INTO nodes (id, roles, hostname, pid) VALUES ($1, '{wrapper}', 'busy', 1)`, [live]);
      const orphan = (await call(url, 'POST', '/v1/dags/claims/jobs/source/runs', { token: TOKEN })).body.task_id as string;
      const held = (await call(url, 'POST', '/v1/dags/claims/jobs/source/runs', { token: TOKEN })).body.task_id as string;
      const claimable = `SELECT count(*)::int AS n FROM task_attempts WHERE delivery = 'local' AND token_hash IS NULL AND finished_at IS NULL`;
      await waitFor(async () => (await db.query(claimable)).rows[0].n === 2 || undefined, 'both attempts started and claimable');
      // As POST /internal/task-claim binds them: one to a node that no longer exists, one to a live node.
      await db.query(`UPDATE task_attempts SET token_hash = sha256(gen_random_uuid()::text::bytea), wrapper_node = gen_random_uuid() WHERE task_id = $1`, [orphan]);
      await db.query(`UPDATE task_attempts SET token_hash = sha256(gen_random_uuid()::text::bytea), wrapper_node = $2 WHERE task_id = $1`, [held, live]);

      const internalToken = readFileSync(join(dataDir, 'internal-token'), 'utf8').trim();
      const wrapper = await startTrace({ args: ['--role', 'wrapper'], env: { DATABASE_URL: databaseUrl, TRACE_DISPATCHER_URL: url, TRACE_INTERNAL_TOKEN: internalToken, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '200' } });
      procs.push(wrapper);
      const retried = await taskFinished(url, TOKEN, orphan);
      expect(retried.status).toBe('succeeded');
      expect(retried.attempts.map((a: { outcome: string }) => a.outcome)).toEqual(['timed_out', 'succeeded']);
      expect(retried.attempts[0].error).toBe('the wrapper running it stopped');
      const stillHeld = (await call(url, 'GET', `/v1/tasks/${held}`, { token: TOKEN })).body;
      expect(stillHeld.status).toBe('running');
      expect(stillHeld.attempts).toHaveLength(1);
      expect((await db.query('SELECT wrapper_node FROM task_attempts WHERE task_id = $1', [held])).rows).toEqual([{ wrapper_node: live }]);
    } finally {
      await db.end();
    }
  });
});
