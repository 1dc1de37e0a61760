/**
 * npm run bench:query — the Query Service's latency against bare DuckDB on the same Parquet files
 * (≥ 10 million rows across many range files) and the same settings, in one run: a full
 * aggregate, a selective filter, and a Postgres ⨝ Parquet join. Results go to docs/benchmarks.md.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort, sleep, median } from './support.mjs';
import pg from 'pg';

const require = createRequire(import.meta.url);
const root = join(import.meta.dirname, '..', '..');
const { DuckDBInstance } = require('@duckdb/node-api');
const FILES = Number(process.env.BENCH_FILES ?? 100);
const ROWS_PER_FILE = Number(process.env.BENCH_ROWS_PER_FILE ?? 100_000);
const BLOCKS_PER_FILE = 1000;
const LABELS = Number(process.env.BENCH_LABELS ?? 20_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const THREADS = 2;
const MEMORY = '1GB';
const TOKEN = 'trc_bench-query-token-00000000000000';


// ---------------------------------------------------------------- Trace, with two empty datasets
const dataDir = mkdtempSync(join(tmpdir(), 'trace-bench-query-'));
chmodSync(dataDir, 0o755);
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const trace = spawn(process.execPath, [join(root, 'dist/src/main.js'), '--role', 'all'], {
  env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, LOG_LEVEL: 'warn', TRACE_QUERY_THREADS: String(THREADS), TRACE_QUERY_MEMORY_LIMIT: MEMORY, TRACE_QUERY_TIMEOUT_MS: '600000' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
process.on('exit', () => trace.kill('SIGKILL'));
for (;;) {
  try {
    if ((await fetch(`${base}/health`)).ok) break;
  } catch {
    /* not up yet */
  }
  await sleep(100);
}
const api = async (method: string, path: string, body?: unknown, type = 'application/json') => {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': type }, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
};
await api('POST', '/v1/dags', `name: benchq
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: none.js
    outputs:
      - {backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}
      - {backend: postgres, update_strategy: replace, cursor: block_number}
publish:
  - {job: source, output_index: 0, dataset_name: transfers}
  - {job: source, output_index: 1, dataset_name: labels}
`, 'application/yaml');
const location = async (name: string) => (await api('GET', `/v1/datasets/${name}`)).versions.find((v: { current: boolean }) => v.current).location as string;

// ---------------------------------------------------------------- the data, written where the datasets' current versions live
console.log(`writing ${FILES} files × ${ROWS_PER_FILE} rows and ${LABELS} Postgres rows ...`);
const dir = join(dataDir, 'objects', await location('transfers'));
mkdirSync(dir, { recursive: true });
const gen = await (await DuckDBInstance.create(':memory:', { threads: '2' })).connect();
const files: string[] = [];
for (let f = 0; f < FILES; f++) {
  const start = f * BLOCKS_PER_FILE;
  const path = join(dir, `${start}_${start + BLOCKS_PER_FILE - 1}.parquet`);
  await gen.run(`COPY (SELECT (${start} + i // ${ROWS_PER_FILE / BLOCKS_PER_FILE})::UINTEGER AS block_number, (i % 97)::UINTEGER AS log_index,
                        (hash(i) % 1000)::UINTEGER AS token, (hash(i * 7) % 1000000)::UBIGINT AS amount
                   FROM range(${ROWS_PER_FILE}) t(i)) TO '${path}' (FORMAT parquet, COMPRESSION zstd, DICTIONARY_SIZE_LIMIT 0)`);
  files.push(path);
}
const labelsTable = await location('labels');
const db = new pg.Client({ host: join(dataDir, 'pg'), port: 5432, user: 'trace', database: 'trace' });
await db.connect();
const m = /^"(ds_[0-9a-f]{32})"\."(v_[0-9a-f]{32})"$/.exec(labelsTable)!;
await db.query(`CREATE SCHEMA IF NOT EXISTS "${m[1]}"`);
await db.query(`CREATE TABLE ${labelsTable} (block_number bigint, label text)`);
await db.query(`INSERT INTO ${labelsTable} SELECT b, 'label_' || (b % 50) FROM generate_series(0, ${LABELS - 1}) b`);
await db.end();

// ---------------------------------------------------------------- the queries
const SPAN = FILES * BLOCKS_PER_FILE;
const QUERIES: [string, string][] = [
  ['full aggregate', 'SELECT count(*) AS n, sum(amount) AS total, count(DISTINCT token) AS tokens FROM transfers'],
  ['selective filter', `SELECT count(*) AS n, sum(amount) AS total FROM transfers WHERE block_number BETWEEN ${Math.floor(SPAN / 2)} AND ${Math.floor(SPAN / 2) + 500}`],
  ['Postgres ⨝ Parquet join', `SELECT l.label, count(*) AS n, sum(t.amount) AS total FROM transfers t JOIN labels l USING (block_number) GROUP BY l.label ORDER BY l.label`],
  ['Postgres side alone', 'SELECT count(*) AS n FROM labels'],
];

/** Bare DuckDB: the same settings, the same files, the Postgres rows loaded the way the service loads them. */
async function bare(sql: string): Promise<{ ms: number; rows: unknown }> {
  const t0 = performance.now();
  const instance = await DuckDBInstance.create(':memory:', { threads: String(THREADS), memory_limit: MEMORY });
  const conn = await instance.connect();
  await conn.run(`CREATE VIEW transfers AS SELECT * FROM read_parquet([${files.map((f) => `'${f}'`).join(',')}])`);
  if (sql.includes('labels')) {
    const c = new pg.Client({ host: join(dataDir, 'pg'), port: 5432, user: 'trace', database: 'trace' });
    await c.connect();
    const { rows } = await c.query(`SELECT block_number, label FROM ${labelsTable}`);
    await c.end();
    await conn.run('CREATE TABLE labels (block_number BIGINT, label VARCHAR)');
    const a = await conn.createAppender('labels');
    for (const r of rows) {
      a.appendBigInt(BigInt(r.block_number));
      a.appendVarchar(r.label);
      a.endRow();
    }
    a.closeSync();
  }
  const result = (await conn.runAndReadAll(sql)).getRowsJS();
  conn.closeSync();
  instance.closeSync();
  return { ms: performance.now() - t0, rows: JSON.stringify(result, (_k, v) => (typeof v === 'bigint' ? Number(v) : v)) };
}
async function service(sql: string): Promise<{ ms: number; rows: unknown }> {
  const t0 = performance.now();
  const answer = await api('POST', '/v1/query', { sql, mode: 'interactive' });
  return { ms: performance.now() - t0, rows: JSON.stringify(answer.rows, (_k, v) => (typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v)) };
}

const results: string[] = [];
for (const [name, sql] of QUERIES) {
  const b: number[] = [];
  const s: number[] = [];
  await bare(sql); // warm the page cache for both
  await service(sql);
  for (let i = 0; i < RUNS; i++) {
    const x = await bare(sql);
    const y = await service(sql);
    if (x.rows !== y.rows) throw new Error(`${name}: the service and bare DuckDB disagree:\n${x.rows}\n${y.rows}`);
    b.push(x.ms);
    s.push(y.ms);
  }
  results.push(`| ${name} | ${median(b).toFixed(1)} | ${median(s).toFixed(1)} | ${(median(s) / median(b)).toFixed(2)} | ${(((median(s) - median(b)) / median(b)) * 100).toFixed(0)} % |`);
  console.log(results.at(-1));
}

console.log(`\nmachine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; ${FILES} files, ${FILES * ROWS_PER_FILE} rows, ${LABELS} Postgres rows; threads ${THREADS}, memory_limit ${MEMORY}; medians of ${RUNS}`);
console.log('| query | bare DuckDB ms | Trace Query Service ms | Trace ÷ bare | overhead |');
console.log('|---|---|---|---|---|');
for (const r of results) console.log(r);
trace.kill('SIGTERM');
await new Promise((r) => trace.once('exit', r));
rmSync(dataDir, { recursive: true, force: true }); // the generated Parquet files and embedded cluster
process.exit(0);
