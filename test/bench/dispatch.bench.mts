/**
 * npm run bench:dispatch — Trace's task path against graphile-worker 0.17 on the same Postgres,
 * in one run: burn (a 20,000-event backlog, then workers start), stream (8 producers while
 * workers run) and paced (200 events/s). Results go to docs/benchmarks.md.
 *
 * Trace's side is the real dispatcher process (registry,dispatcher roles) and, as workers,
 * loops that do exactly what a wrapper does around an operator: claim started attempts through
 * the local transport (POST /internal/task-claim, which binds them and returns their payloads)
 * and complete them (POST /internal/task-complete[-batch]). Operator code is not run (both sides
 * run no-op jobs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, chmodSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuMsOf, cpuMsOfPid, freePort, sleep } from './support.mjs';
import pg from 'pg';
import { Logger, makeWorkerUtils, run as runGraphile } from 'graphile-worker';

const require = createRequire(import.meta.url);
const root = join(import.meta.dirname, '..', '..');
const { EmbeddedPostgres } = require(join(root, 'dist/src/common/db/embedded-postgres.js'));
const { JsonLogger } = require(join(root, 'dist/src/common/logging/json-logger.js'));
const { LocalTransport } = require(join(root, 'dist/src/dispatcher/transport/local-transport.js'));
const { DispatcherClient } = require(join(root, 'dist/src/wrapper/dispatcher-client.js'));

const WORKERS = Number(process.env.BENCH_WORKERS ?? 8);
const BURN = Number(process.env.BENCH_BURN ?? 20_000);
const STREAM_PER_PRODUCER = Number(process.env.BENCH_STREAM ?? 1_000);
const PACED_SECONDS = Number(process.env.BENCH_PACED_SECONDS ?? 10);
/** Rounds of every scenario on every side, in alternating order; figures are the medians (the machine is noisy). */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** Which scenarios to run (BENCH_SCENARIOS=paced, say, while working on one). */
const SCENARIOS = new Set((process.env.BENCH_SCENARIOS ?? 'burn,stream,paced').split(','));
const TOKEN = 'trc_bench-dev-token-000000000000000';

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};

// ---------------------------------------------------------------- Postgres (shared by both)
const pgDir = mkdtempSync(join(tmpdir(), 'trace-bench-pg-'));
chmodSync(pgDir, 0o755);
// BENCH_STATEMENTS=1 prints the Trace database's costliest statements at the end (pg_stat_statements);
// BENCH_STATEMENTS=all also the statements inside functions. BENCH_EXPLAIN=<dir> logs the plans of
// one statement in a hundred, with timings and buffers, to <dir>/pg.log (auto_explain).
const STATEMENTS = Boolean(process.env.BENCH_STATEMENTS);
const server = new EmbeddedPostgres({
  dataDir: pgDir,
  osUser: 'postgres',
  logger: new JsonLogger('error', () => undefined),
  settings: process.env.BENCH_EXPLAIN ? { shared_preload_libraries: 'auto_explain', 'auto_explain.log_min_duration': '0', 'auto_explain.log_analyze': 'on', 'auto_explain.log_buffers': 'on', 'auto_explain.log_nested_statements': 'on', 'auto_explain.sample_rate': '0.01', logging_collector: 'on', log_directory: process.env.BENCH_EXPLAIN, log_filename: 'pg.log' } : STATEMENTS ? { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track_planning': 'on', ...(process.env.BENCH_STATEMENTS === 'all' ? { 'pg_stat_statements.track': 'all' } : {}) } : undefined,
});
const target = await server.start();
const admin = new pg.Client({ host: target.host, port: target.port, user: 'trace', database: 'postgres' });
await admin.connect();
await admin.query('CREATE DATABASE bench_trace');
await admin.query('CREATE DATABASE bench_graphile');
await admin.end();
const url = (db: string) => `postgresql://trace@localhost/${db}?host=${encodeURIComponent(target.host)}`;

// ---------------------------------------------------------------- Trace
const dataDir = mkdtempSync(join(tmpdir(), 'trace-bench-data-'));
chmodSync(dataDir, 0o755);
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
const dispatcher: ChildProcess = spawn(process.execPath, [...profile, join(root, 'dist/src/main.js'), '--role', 'registry,dispatcher'], {
  env: { PATH: process.env.PATH, DATABASE_URL: url('bench_trace'), PORT: String(port), HOST: '127.0.0.1', TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', LOG_LEVEL: 'warn' },
  stdio: ['ignore', 'inherit', 'inherit'],
});
// Whatever happens, leave no server behind.
process.on('exit', () => {
  dispatcher.kill('SIGKILL');
  server.stop();
});
for (;;) {
  try {
    if ((await fetch(`${base}/health`)).ok) break;
  } catch {
    /* not up yet */
  }
  await sleep(100);
}
const api = async (method: string, path: string, body?: unknown, token = TOKEN) => {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': body === undefined ? 'application/json' : typeof body === 'string' ? 'application/yaml' : 'application/json' }, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
};
const platform = readFileSync(join(dataDir, 'internal-token'), 'utf8').trim();
await api('POST', '/v1/dags', `name: bench
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: none.js
    scaling: {max_concurrency: 64}
    outputs: [{backend: s3, update_strategy: replace}]
  - name: noop
    operator: user
    language: javascript
    entry_point: none.js
    scaling: {max_concurrency: 64}
    inputs: [{from: {job: source}}]
    outputs: [{backend: s3, update_strategy: replace}]
`);
const traceDb = new pg.Pool({ connectionString: url('bench_trace'), max: 4 });

/** A producer: a source run whose attempt token we hold, posting events over /internal/events. */
async function producer(): Promise<string> {
  const { task_id } = await api('POST', '/v1/dags/bench/jobs/source/runs');
  for (;;) {
    const res = await fetch(`${base}/internal/task-fetch?task_id=${task_id}`, { headers: { authorization: `Bearer ${platform}` } });
    if (res.ok) return ((await res.json()) as { attempt_token: string }).attempt_token;
    await sleep(20); // not started yet
  }
}
let seq = 0;
const submitted = new Map<string, number>();
/** The producers post events with the wrapper's own client (POST /internal/events), as an operator's wrapper does. */
const producerClient = new DispatcherClient(base, platform, '');
async function postEvents(token: string, n: number) {
  const events = Array.from({ length: n }, () => {
    const key = `k${seq++}`;
    submitted.set(key, performance.now());
    return { output: 0, partition_key: key };
  });
  await producerClient.emit(token, events);
}

interface Run { latencies: number[]; done: number; stop: boolean }
/** WORKERS loops doing a wrapper's job around a no-op operator. */
async function traceWorkers(r: Run) {
  // Like the wrapper: an empty claim is a long poll the dispatcher answers when it starts work.
  const transport = new LocalTransport(1000); // TRACE_DISPATCH_POLL_MS, as the wrapper
  const client = new DispatcherClient(base, platform, ''); // no node id: the bench workers are not in `nodes`
  // As the wrapper does (src/wrapper/worker.service.ts): claim up to the free capacity (each
  // attempt arrives bound, with its payload), run each concurrently; completions made together
  // go in one call.
  let running = 0;
  let freed: () => void = () => undefined;
  const handle = async (m: { payload?: { attempt_token: string; input: { event: { partition_key?: string } } | null } }) => {
    try {
      const payload = m.payload!;
      const key = payload.input?.event.partition_key;
      const t0 = key ? submitted.get(key) : undefined;
      if (t0 !== undefined) r.latencies.push(performance.now() - t0);
      // As the wrapper does (src/wrapper/task-runner.ts): the operator is done, so its slot is free
      // while the completion is in flight.
      void client.complete(payload.attempt_token, 'succeeded', []).then(() => r.done++);
    } finally {
      running--;
      freed();
    }
  };
  while (!r.stop) {
    if (running >= WORKERS) {
      await new Promise<void>((res) => (freed = res));
      continue;
    }
    const messages = await transport.receive(WORKERS - running, client);
    running += messages.length;
    for (const m of messages) void handle(m);
  }
  // As the wrapper's drain: what claims still out bring in is run too.
  for (const m of await transport.drain()) {
    running++;
    void handle(m);
  }
  while (running > 0) await new Promise<void>((res) => (freed = res));
  client.close();
}
async function traceQueued(): Promise<number> {
  const { rows } = await traceDb.query(`SELECT count(*)::int AS n FROM tasks WHERE job_name = 'noop' AND status IN ('queued', 'running')`);
  return rows[0].n;
}
async function waitFor(cond: () => Promise<boolean> | boolean) {
  while (!(await cond())) await sleep(20);
}

// ---------------------------------------------------------------- graphile-worker
const gUtils = await makeWorkerUtils({ connectionString: url('bench_graphile') });
await gUtils.migrate();
const gPool = new pg.Pool({ connectionString: url('bench_graphile'), max: 4 });
async function gAdd(n: number) {
  const specs = Array.from({ length: n }, () => {
    const key = `g${seq++}`;
    submitted.set(key, performance.now());
    return { identifier: 'noop', payload: { key } };
  });
  await gPool.query(`SELECT graphile_worker.add_jobs(array(SELECT json_populate_recordset(null::graphile_worker.job_spec, $1::json)))`, [JSON.stringify(specs)]);
}
async function graphileRunner(r: Run, batched: boolean) {
  return runGraphile({
    connectionString: url('bench_graphile'),
    concurrency: WORKERS,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: new Logger(() => () => undefined), // quiet, like Trace's side (LOG_LEVEL=warn)
    taskList: {
      noop: async (payload) => {
        const t0 = submitted.get((payload as { key: string }).key);
        if (t0 !== undefined) r.latencies.push(performance.now() - t0);
        r.done++;
      },
    },
    ...(batched ? { preset: { worker: { localQueue: { size: 50 }, completeJobBatchDelay: 0 } } } : {}),
  } as Parameters<typeof runGraphile>[0]);
}

// ---------------------------------------------------------------- scenarios
type Side = 'trace' | 'graphile' | 'graphile (batched)';

/** CPU time so far: Postgres (every backend), the Trace process, and this process (the workers; graphile-worker runs here). */
const cpuNow = () => ({ postgres: cpuMsOf(['postgres']), trace: dispatcher.pid ? cpuMsOfPid(dispatcher.pid) : 0, bench: (process.cpuUsage().user + process.cpuUsage().system) / 1000 });
/** CPU ms per task in burn and stream, per side and round: Postgres, the Trace process (0 for graphile-worker), this process. */
type Cpu = { postgres: number; trace: number; bench: number };
const cpuPerTask: Record<'burn' | 'stream', Partial<Record<Side, Cpu[]>>> = { burn: {}, stream: {} };
const addCpu = (scenario: 'burn' | 'stream', side: Side, c0: ReturnType<typeof cpuNow>, c1: ReturnType<typeof cpuNow>, tasks: number) =>
  (cpuPerTask[scenario][side] ??= []).push({ postgres: (c1.postgres - c0.postgres) / tasks, trace: side === 'trace' ? (c1.trace - c0.trace) / tasks : 0, bench: (c1.bench - c0.bench) / tasks });

async function burn(side: Side) {
  const r: Run = { latencies: [], done: 0, stop: false };
  if (side === 'trace') {
    const token = await producer();
    for (let i = 0; i < BURN; i += 1000) await postEvents(token, Math.min(1000, BURN - i));
    await waitFor(async () => (await traceQueued()) >= BURN); // accepted and fanned out into tasks
    const c0 = cpuNow();
    const t = performance.now();
    const workers = traceWorkers(r);
    await waitFor(() => r.done >= BURN);
    const secs = (performance.now() - t) / 1000;
    const c1 = cpuNow();
    r.stop = true;
    await workers;
    addCpu('burn', side, c0, c1, BURN);
    return BURN / secs;
  }
  for (let i = 0; i < BURN; i += 1000) await gAdd(Math.min(1000, BURN - i));
  const c0 = cpuNow();
  const t = performance.now();
  const runner = await graphileRunner(r, side === 'graphile (batched)');
  await waitFor(() => r.done >= BURN);
  const secs = (performance.now() - t) / 1000;
  const c1 = cpuNow();
  await runner.stop();
  addCpu('burn', side, c0, c1, BURN);
  return BURN / secs;
}

async function stream(side: Side) {
  const r: Run = { latencies: [], done: 0, stop: false };
  const total = 8 * STREAM_PER_PRODUCER;
  let runner: { stop(): Promise<void> } | undefined;
  let workers: Promise<void> | undefined;
  const tokens = side === 'trace' ? await Promise.all(Array.from({ length: 8 }, producer)) : [];
  if (side === 'trace') workers = traceWorkers(r);
  else runner = await graphileRunner(r, side === 'graphile (batched)');
  const c0 = cpuNow();
  const t = performance.now();
  await Promise.all(
    Array.from({ length: 8 }, async (_, p) => {
      for (let i = 0; i < STREAM_PER_PRODUCER; i += 10) {
        if (side === 'trace') await postEvents(tokens[p]!, 10);
        else await gAdd(10);
      }
    }),
  );
  await waitFor(() => r.done >= total);
  const secs = (performance.now() - t) / 1000;
  addCpu('stream', side, c0, cpuNow(), total);
  r.stop = true;
  await workers;
  await runner?.stop();
  return { rate: total / secs, p50: pct(r.latencies, 50), p99: pct(r.latencies, 99) };
}

async function paced(side: Side) {
  const r: Run = { latencies: [], done: 0, stop: false };
  const total = 200 * PACED_SECONDS;
  let runner: { stop(): Promise<void> } | undefined;
  let workers: Promise<void> | undefined;
  const token = side === 'trace' ? await producer() : '';
  if (side === 'trace') workers = traceWorkers(r);
  else runner = await graphileRunner(r, side === 'graphile (batched)');
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + i * 5;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    if (side === 'trace') await postEvents(token, 1);
    else await gAdd(1);
  }
  await waitFor(() => r.done >= total);
  r.stop = true;
  await workers;
  await runner?.stop();
  return { p50: pct(r.latencies, 50), p99: pct(r.latencies, 99) };
}

const sides: Side[] = process.env.BENCH_ONLY ? [process.env.BENCH_ONLY as Side] : ['trace', 'graphile', 'graphile (batched)'];
const results: Record<string, Partial<Record<Side, number[]>>> = {};
const record = (scenario: string, side: Side, value: number) => ((results[scenario] ??= {})[side] ??= []).push(value);
/**
 * Every run starts from the same state: what earlier runs left (finished tasks, deleted jobs) is
 * vacuumed and flushed in both databases first. Otherwise each run inherits the dead rows and
 * index entries of the runs before it, and whether autovacuum happened to clean them up between
 * runs decided a round: without it, one run's burn measured Trace at 0.77, 1.40 and 1.28 of
 * graphile-worker's default in its three rounds.
 */
async function settle() {
  for (const db of [traceDb, gPool]) await db.query('VACUUM');
  await traceDb.query('CHECKPOINT');
}
for (let round = 0; round < ROUNDS; round++) {
  // Who goes first alternates, so a slow spell of the machine does not always land on one side.
  const order = round % 2 === 0 ? sides : [...sides].reverse();
  if (SCENARIOS.has('burn')) for (const side of order) {
    await settle();
    record('burn: tasks/s', side, await burn(side));
  }
  if (SCENARIOS.has('stream')) for (const side of order) {
    await settle();
    const s = await stream(side);
    record('stream: tasks/s', side, s.rate);
    record('stream: submit→start p50 ms', side, s.p50);
    record('stream: submit→start p99 ms', side, s.p99);
  }
  if (SCENARIOS.has('paced')) for (const side of order) {
    await settle();
    const p = await paced(side);
    record('paced 200/s: submit→start p50 ms', side, p.p50);
    record('paced 200/s: submit→start p99 ms', side, p.p99);
  }
}

const median = (xs: number[] | undefined) => (xs?.length ? pct(xs, 50) : NaN);
const fmt = (x: number) => (Number.isNaN(x) ? '–' : x >= 100 ? x.toFixed(0) : x.toFixed(1));
console.log(`\nmachine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; workers ${WORKERS}; burn ${BURN}; stream 8 × ${STREAM_PER_PRODUCER}; paced ${PACED_SECONDS} s; medians of ${ROUNDS} rounds`);
console.log('| scenario | Trace | graphile-worker (default) | graphile-worker (batched) | Trace ÷ default | Trace ÷ batched |');
console.log('|---|---|---|---|---|---|');
for (const [scenario, v] of Object.entries(results)) {
  const [t, g, b] = [median(v.trace), median(v.graphile), median(v['graphile (batched)'])];
  console.log(`| ${scenario} | ${fmt(t)} | ${fmt(g)} | ${fmt(b)} | ${(t / g).toFixed(2)} | ${(t / b).toFixed(2)} |`);
}
console.log('\nEach side, round by round:');
for (const [scenario, v] of Object.entries(results)) {
  console.log(`- ${scenario}: ${Object.entries(v).map(([side, xs]) => `${side} ${xs!.map(fmt).join(', ')}`).join('; ')}`);
}
console.log('\nTrace ÷ default, round by round:');
for (const [scenario, v] of Object.entries(results)) {
  console.log(`- ${scenario}: ${(v.trace ?? []).map((t, i) => (t / (v.graphile?.[i] ?? NaN)).toFixed(2)).join(', ')}`);
}
for (const scenario of ['burn', 'stream'] as const) {
  console.log(`\n${scenario}, CPU ms per task (medians):`);
  for (const [side, rounds] of Object.entries(cpuPerTask[scenario])) {
    const m = (k: keyof Cpu) => median(rounds!.map((r) => r[k])).toFixed(2);
    const total = median(rounds!.map((r) => r.postgres + r.trace + r.bench)).toFixed(2);
    console.log(side === 'trace' ? `- trace: Postgres ${m('postgres')}, Trace process ${m('trace')}, producers and workers ${m('bench')}; total ${total}` : `- ${side}: Postgres ${m('postgres')}, graphile-worker ${m('bench')}; total ${total}`);
  }
}

if (STATEMENTS) {
  await traceDb.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  const { rows } = await traceDb.query(
    `SELECT calls, round(total_exec_time)::int AS exec_ms, round(total_plan_time)::int AS plan_ms, round(mean_exec_time::numeric, 3) AS mean_exec_ms, round(mean_plan_time::numeric, 3) AS mean_plan_ms, round(shared_blks_hit::numeric / nullif(calls, 0), 1) AS blks_per_call, round(rows::numeric / nullif(calls, 0), 1) AS rows_per_call, left(regexp_replace(query, '\\s+', ' ', 'g'), ${process.env.BENCH_STATEMENTS === 'all' ? 200 : 90}) AS query
       FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'bench_trace' ORDER BY total_exec_time + total_plan_time DESC LIMIT ${process.env.BENCH_STATEMENTS === 'all' ? 25 : 12}`,
  );
  console.table(rows);
}
producerClient.close();
await gUtils.release();
await gPool.end();
await traceDb.end();
dispatcher.kill('SIGINT');
await new Promise((r) => dispatcher.once('exit', r));
await server.stop();
// The cluster and data directory hold every task of the run (gigabytes after a few runs).
rmSync(pgDir, { recursive: true, force: true });
rmSync(dataDir, { recursive: true, force: true });
process.exit(0);
