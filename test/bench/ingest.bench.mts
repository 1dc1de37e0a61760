/**
 * npm run bench:ingest — cryo_ingest from anvil to Parquet against the raw ceiling: the same
 * JSON-RPC calls, made by a bare script that writes nothing, at the same batch size and
 * concurrency. Alternating runs, medians reported. Results go to docs/benchmarks.md.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort, sleep, median } from './support.mjs';

const require = createRequire(import.meta.url);
const root = join(import.meta.dirname, '..', '..');
const BLOCKS = Number(process.env.BENCH_BLOCKS ?? 10_000);
const CHUNK = Number(process.env.BENCH_CHUNK ?? 1000);
const TX_BLOCK_EVERY = 5;
const TXS_PER_BLOCK = 10;
const REPS = Number(process.env.BENCH_REPS ?? 3);
const BATCH = 100;
const TOKEN = 'trc_bench-ingest-token-0000000000000';
const TOPIC = '0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef';

const peakKb = (pid: number) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

// ---------------------------------------------------------------- the chain
const arch = process.arch === 'x64' ? 'amd64' : process.arch;
const anvilBin = join(require.resolve(`@foundry-rs/anvil-${process.platform}-${arch}/package.json`), '..', 'bin', 'anvil');
const anvilPort = await freePort();
const anvil = spawn(anvilBin, ['--host', '127.0.0.1', '--port', String(anvilPort), '--silent'], { stdio: 'ignore' });
process.on('exit', () => anvil.kill('SIGKILL'));
const rpcUrl = `http://127.0.0.1:${anvilPort}`;
const rpc = async (calls: { method: string; params: unknown[] }[]) => {
  const res = await fetch(rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(calls.map((c, id) => ({ jsonrpc: '2.0', id, ...c }))) });
  const out = (await res.json()) as { result?: unknown; error?: { message: string } }[];
  for (const o of out) if (o.error) throw new Error(o.error.message);
  return out.map((o) => o.result);
};
for (;;) {
  try {
    await rpc([{ method: 'eth_chainId', params: [] }]);
    break;
  } catch {
    await sleep(50);
  }
}
console.log(`generating ${BLOCKS} blocks with ${TXS_PER_BLOCK} transactions in every ${TX_BLOCK_EVERY}th ...`);
const [accounts] = (await rpc([{ method: 'eth_accounts', params: [] }])) as [string[]];
const RUNTIME = '602035600052600035337f' + TOPIC.slice(2) + '60206000a300';
const [deploy] = (await rpc([{ method: 'eth_sendTransaction', params: [{ from: accounts[0], data: '0x6031806' + '00b6000396000f3' + RUNTIME }] }])) as [string];
await sleep(100);
const [receipt] = (await rpc([{ method: 'eth_getTransactionReceipt', params: [deploy] }])) as [{ contractAddress: string }];
await rpc([{ method: 'evm_setAutomine', params: [false] }]);
const word = (v: string | bigint) => (typeof v === 'string' ? v.slice(2) : v.toString(16)).padStart(64, '0');
let height = 1;
while (height < BLOCKS - 1) {
  if (height % TX_BLOCK_EVERY === 0) {
    const sends = Array.from({ length: TXS_PER_BLOCK }, (_, i) => {
      const from = accounts[i % accounts.length]!;
      const to = accounts[(i + 1) % accounts.length]!;
      return i % 2 === 0
        ? { method: 'eth_sendTransaction', params: [{ from, to, value: '0x1' }] }
        : { method: 'eth_sendTransaction', params: [{ from, to: receipt.contractAddress, data: `0x${word(to)}${word(BigInt(height))}` }] };
    });
    await rpc(sends);
    await rpc([{ method: 'evm_mine', params: [] }]);
    height++;
  } else {
    const n = TX_BLOCK_EVERY - (height % TX_BLOCK_EVERY);
    const mine = Math.min(n, BLOCKS - 1 - height);
    await rpc([{ method: 'anvil_mine', params: [`0x${mine.toString(16)}`] }]);
    height += mine;
  }
}
const head = Number.parseInt(((await rpc([{ method: 'eth_blockNumber', params: [] }])) as [string])[0], 16);
const END = Math.floor((head + 1) / CHUNK) * CHUNK - 1;
console.log(`chain head ${head}; ingesting blocks 0..${END}`);

// ---------------------------------------------------------------- Trace (the real binary)
const dataDir = mkdtempSync(join(tmpdir(), 'trace-bench-ingest-'));
chmodSync(dataDir, 0o755);
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const trace = spawn(process.execPath, [join(root, 'dist/src/main.js'), '--role', 'all'], {
  env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, LOG_LEVEL: 'warn', TRACE_DISPATCH_POLL_MS: '100' },
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
const api = async (method: string, path: string, body?: string) => {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/yaml' }, body });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
};
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
async function traceRun(rep: number): Promise<{ secs: number; rows: number }> {
  const name = `bench_${rep}`;
  await api('POST', '/v1/dags', `name: ${name}
jobs:
  - name: ingest
    operator: cryo_ingest
    timeout: 1h
    config: {datatypes: [blocks, transactions, logs], chunk_size: ${CHUNK}, start_block: 0, end_block: ${END}, confirmations: 0, batch_size: ${BATCH}, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}, ${OUT}, ${OUT}]
`);
  const t0 = performance.now();
  const { task_id } = await api('POST', `/v1/dags/${name}/jobs/ingest/runs`);
  for (;;) {
    const t = await api('GET', `/v1/tasks/${task_id}`);
    if (t.status === 'succeeded') break;
    if (['failed', 'canceled'].includes(t.status)) throw new Error(`ingest ${t.status}: ${JSON.stringify(t.attempts)}`);
    await sleep(20);
  }
  return { secs: (performance.now() - t0) / 1000, rows: 0 };
}

// ---------------------------------------------------------------- the raw ceiling
/** The same calls the operator makes per range, with the same client, batch size and parallelism; nothing is written. */
const RAW = `
const { JsonRpcClient } = require(${JSON.stringify(join(root, 'dist/src/operators/cryo/json-rpc.js'))});
(async () => {
  const rpc = new JsonRpcClient(${JSON.stringify(rpcUrl)}, { batchSize: ${BATCH}, requestsPerSecond: 0, retries: 5, timeoutMs: 30000 });
  const hex = (n) => '0x' + n.toString(16);
  await rpc.call('eth_chainId', []);
  let rows = 0;
  const t0 = performance.now();
  for (let s = 0; s <= ${END}; s += ${CHUNK}) {
    const e = Math.min(s + ${CHUNK} - 1, ${END});
    const ns = Array.from({ length: e - s + 1 }, (_, i) => s + i);
    const [blocks, receipts, logs] = await Promise.all([
      rpc.batch(ns.map((n) => ({ method: 'eth_getBlockByNumber', params: [hex(n), true] }))),
      rpc.batch(ns.map((n) => ({ method: 'eth_getBlockReceipts', params: [hex(n)] }))),
      rpc.call('eth_getLogs', [{ fromBlock: hex(s), toBlock: hex(e) }]),
    ]);
    rows += blocks.length + blocks.reduce((n, b) => n + b.transactions.length, 0) + logs.length;
    void receipts;
  }
  process.stdout.write(JSON.stringify({ secs: (performance.now() - t0) / 1000, rows, peakKb: process.resourceUsage().maxRSS }));
})();
`;
async function rawRun(): Promise<{ secs: number; rows: number; peakMb: number }> {
  const child = spawn(process.execPath, ['-e', RAW], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  await new Promise((r) => child.once('exit', r));
  const { secs, rows, peakKb } = JSON.parse(out);
  return { secs, rows, peakMb: peakKb / 1024 };
}

const rawSecs: number[] = [];
const traceSecs: number[] = [];
let rows = 0;
let rawPeak = 0;
for (let rep = 0; rep < REPS; rep++) {
  const raw = await rawRun();
  rawSecs.push(raw.secs);
  rows = raw.rows;
  rawPeak = Math.max(rawPeak, raw.peakMb);
  traceSecs.push((await traceRun(rep)).secs);
  console.log(`rep ${rep + 1}: raw ${raw.secs.toFixed(2)} s, trace ${traceSecs.at(-1)!.toFixed(2)} s`);
}
const tracePeakMb = peakKb(trace.pid!) / 1024;
const blocks = END + 1;
const r = median(rawSecs);
const t = median(traceSecs);
console.log(`\nmachine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; ${blocks} blocks, ${rows} rows (blocks + transactions + logs), chunk ${CHUNK}, batch ${BATCH}, ${REPS} runs each, medians`);
console.log('| | raw ceiling (RPC only) | Trace cryo_ingest (RPC → Parquet) | Trace ÷ ceiling |');
console.log('|---|---|---|---|');
console.log(`| blocks/s | ${(blocks / r).toFixed(0)} | ${(blocks / t).toFixed(0)} | ${(r / t).toFixed(2)} |`);
console.log(`| rows/s | ${(rows / r).toFixed(0)} | ${(rows / t).toFixed(0)} | ${(r / t).toFixed(2)} |`);
console.log(`| peak memory (RSS) | ${rawPeak.toFixed(0)} MiB (the script) | ${tracePeakMb.toFixed(0)} MiB (the whole all-in-one process) | |`);
trace.kill('SIGTERM');
await new Promise((res) => trace.once('exit', res));
anvil.kill('SIGTERM');
await new Promise((res) => anvil.once('exit', res));
rmSync(dataDir, { recursive: true, force: true }); // the run's Parquet files and embedded cluster
process.exit(0);
