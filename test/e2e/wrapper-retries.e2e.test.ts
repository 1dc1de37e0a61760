import { mkdtempSync, readFileSync, chmodSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { taskFinished } from '../support/tasks';
import { startTrace, type TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_wrapperretriesplatformadmin00000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');

/**
 * A dispatcher that cannot answer for a while (a restart, its database failing over) delays a
 * task's events and completion; it does not lose them or leave the task to its deadline. Between
 * the wrapper and the dispatcher sits a proxy that answers the first calls of each kind with 503.
 */
describe('the wrapper retries what the dispatcher could not answer', () => {
  const procs: TraceProcess[] = [];
  let proxy: Server;
  const refused: Record<string, number> = {};

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await new Promise((r) => proxy?.close(r));
  });

  it('events and completions answered 503 are sent again until accepted; the task succeeds at once with each event once', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-retries-'));
    chmodSync(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('retries');
    const dispatcher = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: databaseUrl, TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DISPATCH_POLL_MS: '100' },
    });
    procs.push(dispatcher);
    const upstream = new URL(dispatcher.baseUrl);
    const budget: Record<string, number> = { '/internal/events': 2, '/internal/task-complete': 2, '/internal/task-complete-batch': 2 };
    proxy = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0]!;
      if (req.method === 'POST' && (budget[path] ?? 0) > 0) {
        budget[path]!--;
        refused[path] = (refused[path] ?? 0) + 1;
        req.resume();
        res.writeHead(503, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ error: { code: 'unavailable', message: 'the system database is restarting' } }));
      }
      const out = request({ hostname: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(out);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    procs.push(
      await startTrace({
        args: ['--role', 'wrapper'],
        env: {
          DATABASE_URL: databaseUrl,
          TRACE_CODE_ROOT: CODE_ROOT,
          TRACE_DISPATCH_POLL_MS: '100',
          TRACE_DISPATCHER_URL: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
          TRACE_INTERNAL_TOKEN: readFileSync(join(dataDir, 'internal-token'), 'utf8').trim(),
        },
      }),
    );
    // 250 events: two relayed while the code runs (batches of 100), the rest with the completion.
    const dag = `name: retried
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    max_attempts: 1
    config: {count: 250, chunk: 10}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    expect((await postYaml(dispatcher.baseUrl, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const started = Date.now();
    const id = (await call(dispatcher.baseUrl, 'POST', '/v1/dags/retried/jobs/source/runs', { token: TOKEN })).body.task_id;
    const done = await taskFinished(dispatcher.baseUrl, TOKEN, id, 60_000);
    expect([done.status, done.error]).toEqual(['succeeded', null]);
    expect(done.attempts).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(done.events).toHaveLength(250);
    expect(new Set(done.events.map((e: { start: string }) => e.start)).size).toBe(250);
    expect(refused['/internal/events']).toBe(2);
    expect((refused['/internal/task-complete'] ?? 0) + (refused['/internal/task-complete-batch'] ?? 0)).toBeGreaterThanOrEqual(1);
  }, 120_000);
});
