import { DuckDBInstance } from '@duckdb/node-api';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTraffic, startAnvil, TRANSFER_TOPIC, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { dagSettled, jobEvents, runSource } from '../support/dags';
import { startTrace, TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_cryo-reorg-test-dev-token-000000';
const CHUNK = 250;
const CONFIRMATIONS = 100;
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';

/** ingest → l1 (transfers per block) → l2 (transfers per range): an invalidation must reach l2. */
const dag = (name: string, rpcUrl: string) => `name: ${name}
jobs:
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [blocks, transactions, logs], chunk_size: ${CHUNK}, start_block: 0, confirmations: ${CONFIRMATIONS}, batch_size: 50, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}, ${OUT}, ${OUT}]
  - name: l1
    operator: sql
    inputs: [{from: {job: ingest, output: 2}}]
    config: {sql: "SELECT block_number, count(*) AS transfers FROM input_0 WHERE topic0 = from_hex('${TRANSFER_TOPIC.slice(2)}') GROUP BY block_number ORDER BY block_number"}
    outputs: [${OUT}]
  - name: l2
    operator: sql
    inputs: [{from: {job: l1, output: 0}}]
    config: {sql: "SELECT count(*) AS blocks_with_transfers, coalesce(sum(transfers), 0) AS transfers FROM input_0"}
    outputs: [${OUT}]
  - name: win
    operator: range_aggregator
    inputs: [{from: {job: ingest, output: 2}}]
    config: {range_size: ${2 * CHUNK}}
    outputs: [${OUT}]
  - name: wsql
    operator: sql
    inputs: [{from: {job: win, output: 0}}]
    config: {sql: "SELECT count(*) AS logs, count(DISTINCT block_number) AS blocks_with_logs FROM input_0"}
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: ${name}_blocks}
  - {job: wsql, output_index: 0, dataset_name: ${name}_wsql}
  - {job: ingest, output_index: 1, dataset_name: ${name}_transactions}
  - {job: ingest, output_index: 2, dataset_name: ${name}_logs}
  - {job: l1, output_index: 0, dataset_name: ${name}_l1}
  - {job: l2, output_index: 0, dataset_name: ${name}_l2}
`;

/**
 * Reorgs against cryo_ingest's confirmation window, on a real anvil chain: one within the window
 * changes nothing already written; one beyond it is detected by block hash, the affected range is
 * re-ingested in place, and the invalidation cascades two levels down. The end state equals a
 * fresh ingest of the new chain, file for file.
 */
describe('cryo_ingest reorgs', () => {
  let anvil: Anvil;
  let trace: TraceProcess;
  let dataDir: string;

  const api = (method: string, path: string) => call(trace.baseUrl, method, path, { token: TOKEN });
  const dir = async (name: string) => {
    const d = (await api('GET', `/v1/datasets/${name}`)).body;
    return join(dataDir, 'objects', d.versions.find((v: { current: boolean }) => v.current).location);
  };
  const ranges = async (name: string) => {
    const d = await dir(name);
    return existsSync(d) ? readdirSync(d).map((f) => f.replace('.parquet', '')).sort((a, b) => Number(a.split('_')[0]) - Number(b.split('_')[0])) : [];
  };
  const digest = async (name: string) => {
    const d = await dir(name);
    return Object.fromEntries(readdirSync(d).map((f) => [f, createHash('sha256').update(readFileSync(join(d, f))).digest('hex')]));
  };
  const runIngest = (name: string) => runSource(trace.baseUrl, TOKEN, name, 'ingest') as Promise<{ events: { kind: string; start: string; end: string; cursor: string }[] }>;
  const settled = (name: string) => dagSettled(trace.baseUrl, TOKEN, name);
  const head = async () => Number.parseInt(await anvil.rpc<string>('eth_blockNumber'), 16);

  beforeAll(async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, 1500, 60);
    dataDir = mkdtempSync(join(tmpdir(), 'trace-reorg-'));
    await chmod(dataDir, 0o755);
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { DATABASE_URL: await createTestDatabase('reorg'), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100' },
    });
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag('chain', anvil.url))).status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
  });

  it('stays confirmations behind the head: only complete ranges at least that deep are written', async () => {
    expect(await head()).toBeGreaterThanOrEqual(1499);
    expect(await head()).toBeLessThan(1500 + 50);
    await runIngest('chain');
    // The safe head is about 1400: [1250, 1499] is not complete below it.
    expect(await ranges('chain_blocks')).toEqual(['0_249', '250_499', '500_749', '750_999', '1000_1249']);
  }, 180_000);

  it('a reorg within the confirmation window touches nothing written', async () => {
    const before = await digest('chain_blocks');
    const accounts = await anvil.rpc<string[]>('eth_accounts');
    await anvil.rpc('anvil_reorg', [CONFIRMATIONS - 10, [[{ from: accounts[1], to: accounts[2], value: '0x7' }, 3]]]);
    const t = await runIngest('chain');
    expect(t.events.filter((e) => e.kind === 'invalidation')).toEqual([]);
    expect(await digest('chain_blocks')).toEqual(before);
  }, 180_000);

  it('a reorg beyond the window is re-ingested in place, invalidated two levels down, and equals a fresh ingest', async () => {
    await settled('chain');
    const before = await digest('chain_blocks');
    const oldHash = (await anvil.rpc<{ hash: string }>('eth_getBlockByNumber', ['0x4e1', false])).hash; // block 1249
    await anvil.rpc('anvil_mine', ['0xc8']); // head about 1700, safe about 1600
    const accounts = await anvil.rpc<string[]>('eth_accounts');
    // Replace the last 600 blocks (from about 1100): range [1000, 1249] changes under what was written.
    await anvil.rpc('anvil_reorg', [600, [[{ from: accounts[4], to: accounts[5], value: '0x1234' }, 10], [{ from: accounts[6], to: accounts[7], value: '0x99' }, 200]]]);
    expect((await anvil.rpc<{ hash: string }>('eth_getBlockByNumber', ['0x4e1', false])).hash).not.toBe(oldHash);

    const t = await runIngest('chain');
    const invalidated = t.events.filter((e) => e.kind === 'invalidation').map((e) => `${e.start}_${e.end}`);
    expect(invalidated).toEqual(['1000_1249', '1000_1249', '1000_1249']); // blocks, transactions, logs
    expect(await ranges('chain_blocks')).toEqual(['0_249', '250_499', '500_749', '750_999', '1000_1249', '1250_1499']);
    const after = await digest('chain_blocks');
    for (const f of ['0_249', '250_499', '500_749', '750_999']) expect(after[`${f}.parquet`]).toBe(before[`${f}.parquet`]); // untouched
    expect(after['1000_1249.parquet']).not.toBe(before['1000_1249.parquet']);

    // The invalidation reached l2 (two levels below the ingest): it emitted one for the range.
    const tasks = await settled('chain');
    expect(tasks.every((x) => x.status === 'succeeded')).toBe(true);
    const l2Events = (await jobEvents(trace.baseUrl, TOKEN, 'chain', 'l2')) as { kind: string; start: string; end: string }[];
    expect(l2Events.filter((e) => e.kind === 'invalidation').map((e) => `${e.start}_${e.end}`)).toEqual(['1000_1249']);

    // A fresh ingest of the new chain, in another DAG, writes the same files, and derives the same rows.
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag('fresh', anvil.url))).status).toBe(201);
    await runIngest('fresh');
    await settled('fresh');
    for (const d of ['blocks', 'transactions', 'logs', 'wsql']) expect([d, await digest(`chain_${d}`)]).toEqual([d, await digest(`fresh_${d}`)]);
    const duck = await DuckDBInstance.create(':memory:');
    const conn = await duck.connect();
    for (const d of ['l1', 'l2']) {
      const [a, b] = [await dir(`chain_${d}`), await dir(`fresh_${d}`)];
      const count = async (p: string) => Number((await conn.runAndReadAll(`SELECT count(*) AS n FROM read_parquet('${p}/*.parquet')`)).getRowObjectsJS()[0]!.n);
      expect(await count(a)).toBe(await count(b));
      const rowsA = (await conn.runAndReadAll(`SELECT * EXCLUDE (filename), regexp_extract(filename, '[0-9]+_[0-9]+') AS r FROM read_parquet('${a}/*.parquet', filename = true) ORDER BY ALL`)).getRowObjectsJS();
      const rowsB = (await conn.runAndReadAll(`SELECT * EXCLUDE (filename), regexp_extract(filename, '[0-9]+_[0-9]+') AS r FROM read_parquet('${b}/*.parquet', filename = true) ORDER BY ALL`)).getRowObjectsJS();
      expect(rowsA).toEqual(rowsB);
    }
    conn.closeSync();
    duck.closeSync();
  }, 300_000);

  it('a reorg onto a shorter chain retracts what it no longer confirms, two levels down, until it is confirmed again', async () => {
    await settled('chain');
    const snapshot = await anvil.rpc<string>('evm_snapshot', []);
    const base = await head(); // about 1700: safe about 1600, written up to 1499
    expect(base).toBeGreaterThan(1650);
    expect(base).toBeLessThan(1749);
    await generateTraffic(anvil, base + 450, 30); // safe about 2050: [1500, 1999] complete below it, [2000, 2249] not
    await runIngest('chain');
    await settled('chain');
    const extra = ['1500_1749', '1750_1999'];
    for (const d of ['chain_blocks', 'chain_l1', 'chain_l2']) expect((await ranges(d)).slice(-2)).toEqual(extra);
    expect((await ranges('chain_wsql')).at(-1)).toBe('1500_1999');

    // Back to the shorter chain: blocks 1500..1999 do not exist on it.
    expect(await anvil.rpc<boolean>('evm_revert', [snapshot])).toBe(true);
    expect(await head()).toBe(base);
    const t = await runIngest('chain');
    const retracted = t.events.filter((e) => e.kind === 'invalidation' && e.cursor === null).map((e) => `${e.start}_${e.end}`);
    expect(retracted.sort()).toEqual([...extra, ...extra, ...extra].sort()); // blocks, transactions, logs
    const tasks = await settled('chain');
    expect(tasks.filter((x) => x.status !== 'succeeded')).toEqual([]);
    // Gone from the current version of every dataset, ingest-level and derived.
    for (const d of ['chain_blocks', 'chain_transactions', 'chain_logs', 'chain_l1', 'chain_l2']) {
      expect([d, (await ranges(d)).filter((r) => extra.includes(r))]).toEqual([d, []]);
    }
    // The window they completed is withdrawn, and what was derived from it goes too.
    expect(await ranges('chain_wsql')).not.toContain('1500_1999');

    // A different chain grows past the old height: the ranges are confirmed again, with its content,
    // and every dataset equals a fresh ingest of the final chain.
    await generateTraffic(anvil, base + 470, 45);
    await runIngest('chain');
    await settled('chain');
    expect((await ranges('chain_blocks')).slice(-2)).toEqual(extra);
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag('final', anvil.url))).status).toBe(201);
    await runIngest('final');
    await settled('final');
    for (const d of ['blocks', 'transactions', 'logs', 'l1', 'l2', 'wsql']) expect([d, await digest(`chain_${d}`)]).toEqual([d, await digest(`final_${d}`)]);
  }, 300_000);
});
