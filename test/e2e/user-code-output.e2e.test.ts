import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { taskFinished } from '../support/tasks';
import { startTrace, type TraceProcess } from '../support/trace-process';

// The built sandbox, as the wrapper runs it (its runners are compiled next to it).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Sandbox } = require('../../dist/src/wrapper/sandbox') as typeof import('../../src/wrapper/sandbox');

const TOKEN = 'trc_usercodeoutputplatformadmin00000';
const FIXTURES = join(__dirname, '..', 'fixtures', 'code');
const EVENTS = 5000;
const LANGUAGES = [
  ['javascript', 'many.js'],
  ['python', 'many.py'],
  ['rust', 'many'],
] as const;

/**
 * Code that writes a lot and exits at once loses nothing: every event it wrote reaches the wrapper,
 * and the task's outcome is decided only once its stdout has been read to the end.
 */
describe('user code that writes a lot and exits at once', () => {
  let codeRoot: string;
  let trace: TraceProcess;

  beforeAll(async () => {
    codeRoot = mkdtempSync(join(tmpdir(), 'trace-many-code-'));
    chmodSync(codeRoot, 0o755);
    execFileSync('rustc', ['-O', '-o', join(codeRoot, 'many'), join(FIXTURES, 'many.rs')]);
    for (const f of ['many.js', 'many.py']) copyFileSync(join(FIXTURES, f), join(codeRoot, f));
    trace = await startTrace({ env: { DATABASE_URL: await createTestDatabase('many'), TRACE_DEV_TOKEN: TOKEN, TRACE_CODE_ROOT: codeRoot, TRACE_DISPATCH_POLL_MS: '100' } });
  }, 180_000);
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it.each(LANGUAGES)('%s: 50 runs, each read by a slow reader, deliver all 5,000 events and the done line', async (language, entry) => {
    const sandbox = new Sandbox({
      mode: 'auto',
      uidBase: 210000,
      uidCount: 4,
      leaseDir: join(mkdtempSync(join(tmpdir(), 'trace-many-leases-')), 'uids'),
      memoryBytes: 4 * 1024 ** 3,
      tmpBytes: 16 * 1024 ** 2,
      maxProcesses: 64,
      maxOpenFiles: 256,
      maxFileBytes: 1024 ** 3,
      hiddenPaths: [],
    });
    const short: number[] = [];
    for (let run = 0; run < 50; run++) {
      const p = await sandbox.spawn({ language, entryPoint: entry, codeRoot, env: {}, cpuSeconds: 30 });
      let text = '';
      p.child.stdout!.on('data', (c: Buffer) => (text += c.toString()));
      // The reader falls behind: the code is done writing, and gone, long before its output is read.
      p.child.stdout!.pause();
      setTimeout(() => p.child.stdout!.resume(), 50);
      p.child.stdin!.end(JSON.stringify({ type: 'task', task: { task_id: 't', attempt: 1, dag: { name: 'd', version: 1 }, job: { name: 'j', config: { count: EVENTS } }, input: null, outputs: [], idempotency: {} } }) + '\n');
      await new Promise((r) => p.child.stdout!.once('close', r));
      await p.release();
      const lines = text.split('\n').filter(Boolean);
      if (lines.length !== EVENTS + 1 || (JSON.parse(lines[EVENTS]!) as { type: string }).type !== 'done') short.push(lines.length);
    }
    expect(short).toEqual([]);
  }, 300_000);

  it.each(LANGUAGES)('%s: through the platform, a task emitting 5,000 events and exiting at once succeeds with all of them, every time', async (language, entry) => {
    const dag = `name: many_${language}
jobs:
  - name: emit
    operator: user
    language: ${language}
    entry_point: ${entry}
    max_attempts: 1
    config: {count: ${EVENTS}}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag)).status).toBe(201);
    for (let run = 0; run < 3; run++) {
      const id = (await call(trace.baseUrl, 'POST', `/v1/dags/many_${language}/jobs/emit/runs`, { token: TOKEN })).body.task_id;
      const done = await taskFinished(trace.baseUrl, TOKEN, id, 120_000);
      expect([done.status, done.error]).toEqual(['succeeded', null]);
      expect(done.events).toHaveLength(EVENTS);
    }
  }, 400_000);
});
