import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { taskFinished } from '../support/tasks';
import { join } from 'node:path';
import { startTrace, type TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_outputcapsplatformadmin000000000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');

/** Whether a process whose command line names `what` runs on the host. */
const running = (what: string) => {
  try {
    execFileSync('pgrep', ['-f', what]);
    return true;
  } catch {
    return false;
  }
};

const rssBytes = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

/**
 * What user code writes and uses is bounded (ADR 0020): a stdout line without an end, a flood of
 * stderr, more memory than its address-space limit, a run past its deadline. Each fails the task
 * with the cap named, and the wrapper's memory stays flat while the code floods it.
 */
describe('user code: bounded output and resources', () => {
  let trace: TraceProcess;
  let url: string;

  beforeAll(async () => {
    trace = await startTrace({ env: { DATABASE_URL: await createTestDatabase('caps'), TRACE_DEV_TOKEN: TOKEN, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '100', TRACE_SANDBOX_MEMORY_LIMIT: '2GiB' } });
    url = trace.baseUrl;
    const job = (name: string, language: string, entry: string, config: string, timeout = 60) => `  - name: ${name}
    operator: user
    language: ${language}
    entry_point: ${entry}
    timeout: ${timeout}
    max_attempts: 1
    config: ${config}
    outputs: [{backend: s3, update_strategy: replace}]
`;
    const dag = `name: caps
jobs:
${job('line50', 'javascript', 'flood.js', '{mb: 50}')}${job('line1g', 'javascript', 'flood.js', '{mb: 1024}')}${job('stderr', 'javascript', 'flood.js', '{mb: 64, stream: stderr}')}${job('memory', 'python', 'hog.py', '{what: memory}')}${job('overtime', 'python', 'hog.py', '{what: time}', 3)}`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  const run = async (job: string) => taskFinished(url, TOKEN, (await call(url, 'POST', `/v1/dags/caps/jobs/${job}/runs`, { token: TOKEN })).body.task_id, 90_000);

  it.each([['line50'], ['line1g']])('%s: a 50 MB or 1 GB stdout line without a newline fails the task naming the cap; the wrapper grows by less than 32 MB', async (job) => {
    const pid = trace.child.pid!;
    const before = rssBytes(pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 10);
    const done = await run(job);
    clearInterval(sampler);
    expect(done.status).toBe('failed');
    expect(done.error).toMatch(/stdout line longer than 1048576 bytes \(TRACE_USER_OUTPUT_MAX_LINE_BYTES\)/);
    console.log(`${job}: wrapper RSS ${Math.round(before / 1e6)} MB before, peak ${Math.round(peak / 1e6)} MB (+${((peak - before) / 1e6).toFixed(1)} MB)`);
    expect(peak - before).toBeLessThan(32 * 1024 * 1024);
  });

  it('a flood of stderr fails the task naming its cap', async () => {
    const done = await run('stderr');
    expect(done.status).toBe('failed');
    expect(done.error).toMatch(/more than 16777216 bytes to stderr \(TRACE_USER_OUTPUT_MAX_STDERR_BYTES\)/);
  });

  it('memory beyond the address-space limit is refused to the code, which fails', async () => {
    const done = await run('memory');
    expect(done.status).toBe('failed');
    expect(done.error).toMatch(/MemoryError/);
  });

  it('code still running at its deadline is killed and the task fails', async () => {
    const started = Date.now();
    const done = await run('overtime');
    expect(done.status).toBe('failed');
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(JSON.stringify(done)).toMatch(/deadline|timed_out/);
    // Killed means gone: nothing of the task is left running on the host.
    await waitFor(() => (running('hog.py') ? undefined : true), 'the killed task to be gone', 5_000);
  });
});
