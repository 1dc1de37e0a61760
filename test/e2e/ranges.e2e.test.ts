import { DuckDBInstance } from '@duckdb/node-api';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTraffic, startAnvil, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { dagSettled, jobEvents, runSource } from '../support/dags';
import { startTrace, TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_ranges-test-dev-token-0000000000';
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const dag = (rpcUrl: string) => `name: ranges
jobs:
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [logs], chunk_size: 250, start_block: 0, end_block: 1999, confirmations: 0, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}]
  - name: agg
    operator: range_aggregator
    scaling: {max_concurrency: 4}
    inputs: [{from: {job: ingest, output: 0}}]
    config: {range_size: 1000, compact: true}
    outputs: [${OUT}]
  - name: per_manifest
    operator: sql
    inputs: [{from: {job: agg, output: 0}}]
    config: {sql: "SELECT min(block_number) AS first_block, max(block_number) AS last_block, count(*) AS logs FROM input_0"}
    outputs: [${OUT}]
  - name: split
    operator: range_splitter
    inputs: [{from: {job: agg, output: 0}}]
    config: {range_size: 500}
    outputs: [${OUT}]
  - name: per_split
    operator: sql
    inputs: [{from: {job: split, output: 0}}]
    config: {sql: "SELECT count(*) AS logs, coalesce(min(block_number), 0) AS first_block FROM input_0"}
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: r_logs}
  - {job: agg, output_index: 0, dataset_name: r_agg}
  - {job: per_manifest, output_index: 0, dataset_name: r_per_manifest}
  - {job: per_split, output_index: 0, dataset_name: r_per_split}
`;

/**
 * range_aggregator and range_splitter over real cryo_ingest output: eight 250-block files become
 * two compacted 1,000-block manifests, exactly once even when four aggregator tasks race and an
 * input range is delivered again; the splitter turns each manifest into 500-block sub-ranges.
 */
describe('range_aggregator and range_splitter', () => {
  let anvil: Anvil;
  let trace: TraceProcess;
  let dataDir: string;
  let duck: Awaited<ReturnType<typeof DuckDBInstance.create>>;

  const api = (method: string, path: string) => call(trace.baseUrl, method, path, { token: TOKEN });
  const files = async (name: string) => {
    const d = (await api('GET', `/v1/datasets/${name}`)).body;
    const dir = join(dataDir, 'objects', d.versions.find((v: { current: boolean }) => v.current).location);
    const start = (f: string) => Number(f.split('_')[0]);
    return existsSync(dir) ? readdirSync(dir).sort((a, b) => start(a) - start(b)).map((f) => join(dir, f)) : [];
  };
  const rows = async (sql: string) => {
    const conn = await duck.connect();
    try {
      return (await conn.runAndReadAll(sql)).getRowObjectsJS();
    } finally {
      conn.closeSync();
    }
  };
  const tasksOf = (job: string) => api('GET', `/v1/tasks?dag=ranges&job=${job}&limit=1000`).then((r) => r.body as { id: string; status: string }[]);
  const emitted = (job: string) => jobEvents(trace.baseUrl, TOKEN, 'ranges', job) as Promise<{ kind: string; start: string; end: string; payload: Record<string, unknown> }[]>;
  const runIngest = async () => {
    await runSource(trace.baseUrl, TOKEN, 'ranges', 'ingest');
    return dagSettled(trace.baseUrl, TOKEN, 'ranges');
  };
  const chainLogs = async (from: number, to: number) => (await anvil.rpc<unknown[]>('eth_getLogs', [{ fromBlock: `0x${from.toString(16)}`, toBlock: `0x${to.toString(16)}` }])).length;

  beforeAll(async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, 2000, 80);
    dataDir = mkdtempSync(join(tmpdir(), 'trace-ranges-'));
    await chmod(dataDir, 0o755);
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { DATABASE_URL: await createTestDatabase('ranges'), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100', TRACE_WRAPPER_CONCURRENCY: '8' },
    });
    duck = await DuckDBInstance.create(':memory:');
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag(anvil.url))).status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    duck?.closeSync();
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
  });

  it('eight 250-block files become two compacted 1,000-block manifests, each emitted once', async () => {
    const all = await runIngest();
    expect(all.every((t) => t.status === 'succeeded')).toBe(true);
    expect(await tasksOf('agg')).toHaveLength(8);
    const manifests = (await emitted('agg')).filter((e) => e.kind === 'data');
    expect(manifests.map((e) => `${e.start}_${e.end}`).sort()).toEqual(['0_999', '1000_1999']);
    for (const m of manifests) {
      expect(m.payload.parts).toEqual(Array.from({ length: 4 }, (_, i) => ({ start: Number(m.start) + 250 * i, end: Number(m.start) + 250 * i + 249 })));
      expect(m.payload.files).toEqual([expect.stringMatching(new RegExp(`/${m.start}_${m.end}\\.parquet$`))]); // compacted: one file
    }
    // The compacted files hold exactly the logs of their windows, and the sql job over them agrees.
    const agg = await files('r_agg');
    expect(agg.map((f) => f.split('/').at(-1))).toEqual(['0_999.parquet', '1000_1999.parquet']);
    for (const [k, f] of agg.entries()) {
      const [r] = await rows(`SELECT count(*) AS n, min(block_number) AS lo, max(block_number) AS hi FROM read_parquet('${f}')`);
      expect(Number(r!.n)).toBe(await chainLogs(k * 1000, k * 1000 + 999));
      expect(Number(r!.lo)).toBeGreaterThanOrEqual(k * 1000);
      expect(Number(r!.hi)).toBeLessThanOrEqual(k * 1000 + 999);
    }
    const perManifest = await rows(`SELECT * FROM read_parquet([${(await files('r_per_manifest')).map((f) => `'${f}'`).join(',')}]) ORDER BY first_block`);
    expect(perManifest.map((r) => Number(r.logs))).toEqual([await chainLogs(0, 999), await chainLogs(1000, 1999)]);
  }, 240_000);

  it('the splitter cuts each manifest into 500-block sub-ranges over the same files', async () => {
    const subs = (await emitted('split')).filter((e) => e.kind === 'data');
    expect(subs.map((e) => `${e.start}_${e.end}`).sort((a, b) => Number(a.split('_')[0]) - Number(b.split('_')[0]))).toEqual(['0_499', '500_999', '1000_1499', '1500_1999']);
    const perSplit = await files('r_per_split');
    expect(perSplit.map((f) => f.split('/').at(-1))).toEqual(['0_499.parquet', '500_999.parquet', '1000_1499.parquet', '1500_1999.parquet']);
    for (const [k, f] of perSplit.entries()) {
      const [r] = await rows(`SELECT logs FROM read_parquet('${f}')`);
      expect(Number(r!.logs)).toBe(await chainLogs(k * 500, k * 500 + 499));
    }
  }, 120_000);

  it('an input range delivered again (a second source run re-announces its last range) makes no second manifest', async () => {
    await runIngest();
    expect(await tasksOf('agg')).toHaveLength(9); // one more task: the re-announced range
    const manifests = (await emitted('agg')).filter((e) => e.kind === 'data');
    expect(manifests).toHaveLength(2);
    expect(await tasksOf('per_manifest')).toHaveLength(2);
  }, 120_000);
});
