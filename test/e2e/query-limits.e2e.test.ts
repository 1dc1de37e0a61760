import { DuckDBInstance } from '@duckdb/node-api';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_query-limits-dev-token-000000000';
const TIMEOUT_MS = 2000;
const MiB = 2 ** 20;
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const dag = (name: string, datasets: string[]) => `name: ${name}
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: none.js
    outputs: [${datasets.map(() => OUT).join(', ')}]
publish:
${datasets.map((d, i) => `  - {job: source, output_index: ${i}, dataset_name: ${d}}`).join('\n')}
`;

// DuckDB's memory_limit does not count these: the list is built outside its buffer manager.
const MEMORY_BOMB = 'SELECT count(*) FROM (SELECT list(x) FROM (SELECT unnest(generate_series(1,100000000)) x))';
// This one DuckDB's own limit catches, as it grows.
const GROWING_BOMB = "SELECT length(string_agg(repeat('x', 10000), ',')) FROM (SELECT unnest(generate_series(1, 200000)) x)";
// 10^10 rows of a cross join, in little memory; it honours the interrupt. (range() is a table function: the gate refuses it.)
const CPU_BOMB = 'SELECT sum(a * b) FROM (SELECT unnest(generate_series(1, 100000)) a) t, (SELECT unnest(generate_series(1, 100000)) b) s';
// One scalar call over a 100 MB string: DuckDB does not look at the interrupt inside it (about 7 s here).
const DEAF_BOMB = "SELECT regexp_replace(repeat('ab', 50000000), '(a|b)', 'x', 'g') = ''";

const statusKb = (pid: number, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
/** CPU ticks (user + system) a process has used. */
const cpuTicks = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]);
};
const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!;

/** Samples a process's resident size until stopped; answers the peak growth over the first sample, in MiB. */
function rssSampler(pid: number): { stop(): number } {
  const base = statusKb(pid, 'VmRSS');
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, statusKb(pid, 'VmRSS'))), 20);
  return {
    stop: () => {
      clearInterval(timer);
      return (Math.max(peak, statusKb(pid, 'VmRSS')) - base) / 1024;
    },
  };
}

/** GET /health back to back until stopped; answers each latency in ms. */
function healthPoller(baseUrl: string): { stop(): Promise<number[]> } {
  const latencies: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      const res = await fetch(`${baseUrl}/health`);
      await res.arrayBuffer();
      latencies.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return latencies;
    },
  };
}

/**
 * The Query Service's limits against a running all-in-one: each query runs in a worker process
 * whose address space the OS caps, killed at its timeout; the serving process (registry,
 * dispatcher, this API) stays small and keeps answering while the bombs go off; nothing reveals
 * the server's paths; workers are replaced when they die and never outlive the server.
 */
describe('the Query Service under hostile queries', () => {
  let trace: TraceProcess;
  let databaseUrl: string;
  let dataDir: string;
  const q = (sql: string, extra: Record<string, unknown> = {}) => call(trace.baseUrl, 'POST', '/v1/query', { token: TOKEN, body: { sql, mode: 'interactive', ...extra } });
  const timed = async (sql: string, extra: Record<string, unknown> = {}) => {
    const t0 = performance.now();
    const res = await q(sql, extra);
    return { ...res, ms: performance.now() - t0 };
  };
  const workers = () => trace.logs.filter((l) => l.msg === 'query worker ready') as { pid: number; mode: string; address_space_limit_mb: number; vm_size_mb: number }[];
  const location = async (name: string) => (await call(trace.baseUrl, 'GET', `/v1/datasets/${name}`, { token: TOKEN })).body.versions.find((v: { current: boolean }) => v.current).location as string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'trace-query-limits-'));
    chmodSync(dataDir, 0o755); // the embedded Postgres user must be able to enter it
    trace = await startTrace({
      args: ['--role', 'all'],
      env: {
        DATABASE_URL: (databaseUrl = await createTestDatabase('query_limits')),
        TRACE_DEV_TOKEN: TOKEN,
        TRACE_BOOTSTRAP_DEV_ORG: 'true',
        TRACE_DATA_DIR: dataDir,
        TRACE_QUERY_MEMORY_LIMIT: '512MB',
        TRACE_QUERY_TIMEOUT_MS: String(TIMEOUT_MS),
        TRACE_QUERY_BATCH_MEMORY_LIMIT: '512MB',
        TRACE_QUERY_BATCH_TIMEOUT_MS: '3000',
        TRACE_QUERY_THREADS: '2',
      },
    });
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag('limits', ['lim_rows', 'lim_broken']))).status).toBe(201);
    // A version of 100 rows, and one whose only file is not Parquet (so DuckDB names it in its error).
    const rows = join(dataDir, 'objects', await location('lim_rows'));
    mkdirSync(rows, { recursive: true });
    const duck = await DuckDBInstance.create(':memory:');
    const conn = await duck.connect();
    await conn.run(`COPY (SELECT i::UINTEGER AS block_number, i * 2 AS v FROM range(100) t(i)) TO '${join(rows, '0_99.parquet')}' (FORMAT parquet)`);
    conn.closeSync();
    duck.closeSync();
    const broken = join(dataDir, 'objects', await location('lim_broken'));
    mkdirSync(broken, { recursive: true });
    writeFileSync(join(broken, '0_99.parquet'), 'not parquet at all');
    await waitFor(() => workers().some((w) => w.mode === 'interactive' && alive(w.pid)), 'a warm interactive worker');
  }, 120_000);
  afterAll(async () => {
    if (trace && trace.child.exitCode === null) await trace.stop();
  });

  it('runs each query in a worker process whose address space the OS caps above its memory limit', async () => {
    const [w] = workers();
    const limits = readFileSync(`/proc/${w!.pid}/limits`, 'utf8');
    const [, soft, hard] = /^Max address space\s+(\d+)\s+(\d+)\s+bytes/m.exec(limits)!;
    expect(soft).toBe(hard);
    console.log(`worker at rest: VmSize ${w!.vm_size_mb} MiB, RSS ${(statusKb(w!.pid, 'VmRSS') / 1024).toFixed(0)} MiB; address-space ceiling ${w!.address_space_limit_mb} MiB`);
    expect(Math.round(Number(soft) / MiB)).toBe(w!.address_space_limit_mb);
    // Its size at rest, plus the 512MB limit and its headroom.
    expect(w!.address_space_limit_mb - w!.vm_size_mb).toBeGreaterThan(512e6 / MiB);
    expect(w!.address_space_limit_mb - w!.vm_size_mb).toBeLessThan(512e6 / MiB + 512);
    expect(readFileSync(`/proc/${w!.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]).toBe(String(trace.child.pid));
    // Nothing of the server's environment (its database URL, its keys) is in the process that runs user SQL.
    const environ = readFileSync(`/proc/${w!.pid}/environ`, 'utf8').split('\0').filter(Boolean);
    expect(environ.filter((v) => !v.startsWith('NODE_CHANNEL_'))).toEqual(['MALLOC_ARENA_MAX=2']); // NODE_CHANNEL_*: Node's IPC
    expect((await q('SELECT count(*) AS n, sum(v) AS s FROM lim_rows')).body).toMatchObject({ rows: [[100, 9900]], row_count: 1 });
  });

  it('refuses memory bombs with 422 query_memory_limit naming the limit, within the timeout + 1 s, and the serving process does not grow', async () => {
    const rss = rssSampler(trace.child.pid!);
    let growth: number;
    try {
      for (const sql of [MEMORY_BOMB, GROWING_BOMB]) {
        const res = await timed(sql);
        expect({ sql, status: res.status, code: res.body.error.code }).toEqual({ sql, status: 422, code: 'query_memory_limit' });
        expect(res.body.error.message).toMatch(/^the query needed more memory than its limit of 512MB \(TRACE_QUERY_MEMORY_LIMIT\): Out of Memory Error/);
        expect(res.ms).toBeLessThan(TIMEOUT_MS + 1000);
        console.log(`memory bomb refused in ${res.ms.toFixed(0)} ms: ${res.body.error.message}`);
      }
    } finally {
      growth = rss.stop();
    }
    console.log(`serving process RSS growth during the memory bombs: ${growth.toFixed(1)} MiB`);
    expect(growth).toBeLessThan(300);
  });

  it('answers 408 query_timeout within the timeout + 1 s: an interrupted statement, and one that ignores the interrupt (its worker is killed)', async () => {
    for (const sql of [CPU_BOMB, DEAF_BOMB]) {
      const res = await timed(sql);
      expect({ sql, status: res.status, error: res.body.error }).toEqual({ sql, status: 408, error: { code: 'query_timeout', message: `the query was interrupted after ${TIMEOUT_MS} ms (TRACE_QUERY_TIMEOUT_MS)` } });
      expect(res.ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expect(res.ms).toBeLessThan(TIMEOUT_MS + 1000);
      console.log(`timeout answered in ${res.ms.toFixed(0)} ms`);
    }
    // The deaf one's worker was killed at the timeout + 250 ms; the next query gets another.
    const killed = await waitFor(() => trace.logs.find((l) => l.msg === 'query worker exited' && l.killed_by === 'timeout'), 'the deaf worker killed');
    expect(alive(killed.pid as number)).toBe(false);
    expect((await q('SELECT 42 AS n')).body.rows).toEqual([[42]]);
  });

  it('keeps /health and a deploy fast while bombs run in every worker', async () => {
    const health = healthPoller(trace.baseUrl);
    const rss = rssSampler(trace.child.pid!);
    let latencies: number[];
    let growth: number;
    let answers: Awaited<ReturnType<typeof timed>>[];
    let deployMs: number;
    const t0 = performance.now();
    try {
      await new Promise((r) => setTimeout(r, 200));
      const bombs = Promise.all([timed(MEMORY_BOMB), timed(CPU_BOMB), timed(DEAF_BOMB), timed(GROWING_BOMB)]);
      await new Promise((r) => setTimeout(r, 300));
      const deployStart = performance.now();
      const deploy = await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag('side', ['lim_side']));
      deployMs = performance.now() - deployStart;
      expect(deploy.status).toBe(201);
      answers = await bombs;
    } finally {
      latencies = await health.stop();
      growth = rss.stop();
    }
    const allMs = performance.now() - t0;
    // Each refused one way or the other (on a busy machine a memory bomb can reach its timeout first).
    const refusals = answers.map((a) => `${a.status} ${a.body.error.code}`);
    expect(refusals.slice(1, 3)).toEqual(['408 query_timeout', '408 query_timeout']);
    for (const r of [refusals[0], refusals[3]]) expect(['422 query_memory_limit', '408 query_timeout']).toContain(r);
    for (const a of answers) expect(a.ms).toBeLessThan(TIMEOUT_MS + 1000);
    const sorted = [...latencies].sort((a, b) => a - b);
    console.log(
      `during ${allMs.toFixed(0)} ms of bombs: /health ${latencies.length} calls, p50 ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} ms, p99 ${p99(latencies).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms; deploy ${deployMs.toFixed(0)} ms; serving RSS growth ${growth.toFixed(1)} MiB`,
    );
    expect(latencies.length).toBeGreaterThan(20);
    expect(p99(latencies)).toBeLessThan(250);
    expect(deployMs).toBeLessThan(1000);
    expect(growth).toBeLessThan(300);
  });

  it('refuses functions that describe the server with a 4xx, and no answer names a server path', async () => {
    const probes: [string, number, string][] = [
      ["SELECT current_setting('allowed_directories')", 400, 'function_not_allowed'],
      ["SELECT current_setting('temp_directory')", 400, 'function_not_allowed'],
      ["SELECT CURRENT_SETTING('home_directory')", 400, 'function_not_allowed'],
      ["SELECT getenv('HOME')", 400, 'function_not_allowed'],
      ['SELECT * FROM duckdb_settings()', 400, 'function_not_allowed'],
      ['SELECT * FROM duckdb_databases()', 400, 'function_not_allowed'],
      ['SELECT * FROM duckdb_temporary_files()', 400, 'function_not_allowed'],
      ['SELECT * FROM duckdb_extensions()', 400, 'function_not_allowed'],
      ['SELECT * FROM pragma_database_list()', 400, 'function_not_allowed'],
      ["SELECT * FROM which_secret('s3://bucket/x', 's3')", 400, 'function_not_allowed'],
      ["SELECT pg_get_viewdef(v) FROM (SELECT unnest(generate_series(1, 3000)) v)", 400, 'function_not_allowed'],
      ["SELECT json_serialize_plan('SELECT * FROM lim_rows')", 400, 'function_not_allowed'],
      ['PRAGMA database_list', 400, 'statement_not_allowed'],
      ['SHOW databases', 400, 'statement_not_allowed'],
      // A view hides its files' virtual columns.
      ['SELECT filename FROM lim_rows', 400, 'query_failed'],
      // DuckDB names the file it could not read: the answer does not say where it is.
      ['SELECT count(*) FROM lim_broken', 400, 'query_failed'],
    ];
    for (const [sql, status, code] of probes) {
      const res = await q(sql);
      expect({ sql, status: res.status, code: res.body.error?.code }).toEqual({ sql, status, code });
      // Neither the data directory, nor the temporary directory it is in, nor the installation (the tests' working directory).
      for (const dir of [dataDir, tmpdir(), process.cwd()]) expect({ sql, text: res.text }).not.toEqual({ sql, text: expect.stringContaining(dir) });
    }
    const broken = await q('SELECT count(*) FROM lim_broken');
    expect(broken.body.error.message).toContain('<object store>/');
    expect((await q('SELECT version() AS v')).status).toBe(200);
  });

  it('records batch bombs as failed runs that name the batch settings', async () => {
    const failed = async (sql: string) => {
      const submitted = await q(sql, { mode: 'batch' });
      expect(submitted.status).toBe(202);
      return waitFor(async () => {
        const s = (await call(trace.baseUrl, 'GET', `/v1/query/${submitted.body.query_id}`, { token: TOKEN })).body;
        return s.status !== 'running' ? s : undefined;
      }, 'the batch query to finish', 30_000);
    };
    const memory = await failed(MEMORY_BOMB);
    expect(memory).toMatchObject({ status: 'failed', result: null });
    expect(memory.error).toMatch(/^the query needed more memory than its limit of 512MB \(TRACE_QUERY_BATCH_MEMORY_LIMIT\)/);
    const slow = await failed(DEAF_BOMB);
    expect(slow).toMatchObject({ status: 'failed', error: 'the query was interrupted after 3000 ms (TRACE_QUERY_BATCH_TIMEOUT_MS)' });
    const broken = await failed('SELECT * FROM lim_broken');
    expect(broken.error).not.toContain(dataDir);
  });

  it('fails a query whose worker dies under it, and replaces the worker: a crash is a 500, a kill it did not send a 422 (the OOM killer\'s signal)', async () => {
    const cases: [NodeJS.Signals, number, string, RegExp][] = [
      ['SIGSEGV', 500, 'query_worker_died', /^the process running the query stopped unexpectedly \(signal SIGSEGV\); it has been replaced, try again$/],
      ['SIGKILL', 422, 'query_memory_limit', /^the query needed more memory than its limit of 512MB \(TRACE_QUERY_MEMORY_LIMIT\): the process running it ran out of memory$/],
    ];
    for (const [signal, status, code, message] of cases) {
      const pending = timed(CPU_BOMB);
      // The worker running it: the one burning CPU.
      const busy = await waitFor(async () => {
        const live = workers().filter((x) => x.mode === 'interactive' && alive(x.pid));
        const before = live.map((w) => cpuTicks(w.pid));
        await new Promise((r) => setTimeout(r, 100));
        return live.find((w, i) => alive(w.pid) && cpuTicks(w.pid) - before[i]! >= 3);
      }, 'the worker running the query');
      process.kill(busy.pid, signal);
      const res = await pending;
      expect({ signal, status: res.status, code: res.body.error.code }).toEqual({ signal, status, code });
      expect(res.body.error.message).toMatch(message);
      expect(res.ms).toBeLessThan(TIMEOUT_MS);
      expect(alive(busy.pid)).toBe(false);
      expect((await q('SELECT 7 AS n')).body.rows).toEqual([[7]]);
    }
  });

  it('still answers normal queries after the bombs, from replaced workers', async () => {
    const exited = trace.logs.filter((l) => l.msg === 'query worker exited' || l.msg === 'query worker recycled');
    expect(exited.length).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) {
      const res = await q('SELECT count(*) AS n, max(block_number) AS hi FROM lim_rows WHERE v >= $1', { params: [10] });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ columns: [{ name: 'n', type: 'BIGINT' }, { name: 'hi', type: 'UINTEGER' }], rows: [[95, 99]], truncated: false });
    }
    const live = workers().filter((w) => alive(w.pid));
    expect(live.length).toBeGreaterThan(0);
    expect(live.length).toBeLessThanOrEqual(4 + 2);
  });

  it('stops every worker when the server stops', async () => {
    const pids = workers().map((w) => w.pid);
    expect(await trace.stop()).toBe(0);
    expect(pids.filter(alive)).toEqual([]);
  });

  // A second server, a query role alone, with a long timeout: its queries do not race the 2 s one.
  it('replaces a worker whose address space stayed grown after a heavy query that succeeded; a worker does not outlive a server that is killed, even mid-query', async () => {
    const query = await startTrace({
      args: ['--role', 'query'],
      env: { DATABASE_URL: databaseUrl, TRACE_DATA_DIR: join(dataDir, 'second'), TRACE_QUERY_TIMEOUT_MS: '60000', TRACE_QUERY_MEMORY_LIMIT: '512MB' },
    });
    const pids = () => query.logs.filter((l) => l.msg === 'query worker ready').map((l) => l.pid as number);
    await waitFor(() => pids().length > 0, 'a warm worker');
    const heavy = await call(query.baseUrl, 'POST', '/v1/query', { token: TOKEN, body: { sql: 'SELECT count(DISTINCT x) AS n FROM (SELECT unnest(generate_series(1, 10000000)) x)' } });
    expect({ status: heavy.status, rows: heavy.body.rows }).toEqual({ status: 200, rows: [[10_000_000]] });
    const recycled = await waitFor(() => query.logs.find((l) => l.msg === 'query worker recycled'), 'the grown worker to be recycled');
    // Grown by more than half its 512MB limit: the next query would not have had its full headroom.
    expect((recycled.vm_size_mb as number) - (recycled.baseline_mb as number)).toBeGreaterThan(512e6 / 2 / MiB);
    await waitFor(() => !alive(recycled.pid as number), 'the recycled worker to exit');
    expect((await call(query.baseUrl, 'POST', '/v1/query', { token: TOKEN, body: { sql: 'SELECT 1 AS one' } })).body.rows).toEqual([[1]]);

    const busy = fetch(`${query.baseUrl}/v1/query`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ sql: CPU_BOMB }) }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    await query.stop('SIGKILL');
    await busy;
    await waitFor(() => pids().every((pid) => !alive(pid)), 'the workers to exit', 5000);
  });
});
