import { mkdtempSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { generateTraffic, startAnvil, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { currentLocation, dagSettled, runSource } from '../support/dags';
import { startTrace, TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_pg-output-test-dev-token-0000000';
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const dag = (rpcUrl: string) => `name: tables
jobs:
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [logs], chunk_size: 250, start_block: 0, end_block: 999, confirmations: 0, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}]
  - name: appended
    operator: sql
    inputs: [{from: {job: ingest, output: 0}}]
    config: {sql: "SELECT block_number, log_index, address, data FROM input_0"}
    outputs: [{backend: postgres, update_strategy: append, unique_key: [block_number, log_index]}]
  - name: replaced
    operator: sql
    inputs: [{from: {job: ingest, output: 0}}]
    config: {sql: "SELECT block_number, count(*) AS logs FROM input_0 GROUP BY block_number"}
    outputs: [{backend: postgres, update_strategy: replace, cursor: block_number}]
  - name: appended_by_block
    operator: sql
    inputs: [{from: {job: ingest, output: 0}}]
    config: {sql: "SELECT block_number, log_index, data FROM input_0"}
    outputs: [{backend: postgres, update_strategy: append, unique_key: [block_number, log_index], cursor: block_number}]
publish:
  - {job: appended, output_index: 0, dataset_name: appended_logs}
  - {job: appended_by_block, output_index: 0, dataset_name: appended_logs_by_block}
  - {job: replaced, output_index: 0, dataset_name: logs_per_block}
`;

/**
 * Postgres-backed outputs: rows land in the version's table (named from uuid and version);
 * `append` drops rows whose unique_key is already there, `replace` rewrites the range. The same
 * ranges are delivered again (a second source run re-announces its last range) and must not
 * duplicate anything.
 */
describe('Postgres-backed outputs: append dedupes by unique_key, replace rewrites the range', () => {
  let anvil: Anvil;
  let trace: TraceProcess;
  let db: Client;

  const api = (method: string, path: string) => call(trace.baseUrl, method, path, { token: TOKEN });
  const table = (name: string) => currentLocation(trace.baseUrl, TOKEN, name);
  const runIngest = async () => {
    await runSource(trace.baseUrl, TOKEN, 'tables', 'ingest');
    return dagSettled(trace.baseUrl, TOKEN, 'tables');
  };

  beforeAll(async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, 1000, 40);
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-pgout-'));
    await chmod(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('pgout');
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100' },
    });
    db = new Client({ connectionString: databaseUrl });
    await db.connect();
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag(anvil.url))).status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    await db?.end();
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
  });

  it('writes each range into the version tables, and a range delivered again duplicates nothing', async () => {
    const first = await runIngest();
    expect(first.every((t) => t.status === 'succeeded')).toBe(true);
    const [appended, replaced] = [await table('appended_logs'), await table('logs_per_block')];
    expect(appended).toMatch(/^"ds_[0-9a-f]{32}"\."v_[0-9a-f]{32}"$/);
    const chain = await anvil.rpc<{ blockNumber: string; logIndex: string }[]>('eth_getLogs', [{ fromBlock: '0x0', toBlock: '0x3e7' }]);
    const perBlock = new Map<number, number>();
    for (const l of chain) perBlock.set(Number.parseInt(l.blockNumber, 16), (perBlock.get(Number.parseInt(l.blockNumber, 16)) ?? 0) + 1);

    const check = async () => {
      const a = await db.query(`SELECT count(*)::int AS n, count(DISTINCT (block_number, log_index))::int AS distinct_rows FROM ${appended}`);
      expect(a.rows[0]).toEqual({ n: chain.length, distinct_rows: chain.length });
      const r = await db.query(`SELECT block_number::int AS block, logs::int AS logs FROM ${replaced} ORDER BY 1`);
      expect(r.rows).toEqual([...perBlock.entries()].sort((x, y) => x[0] - y[0]).map(([block, logs]) => ({ block, logs })));
    };
    await check();

    // The second run re-announces the last range [750, 999]: both jobs run it again.
    const second = await runIngest();
    expect(second.filter((t) => t.job === 'appended')).toHaveLength(5);
    expect(second.filter((t) => t.job === 'replaced')).toHaveLength(5);
    await check();
    // The append task that ran again inserted nothing new: every row was a duplicate by unique_key.
    const appendTasks = (await api('GET', '/v1/tasks?dag=tables&job=appended&limit=1000')).body as { id: string }[];
    const rowsEmitted = (await Promise.all(appendTasks.map(async (t) => (await api('GET', `/v1/tasks/${t.id}`)).body.events))).flat().map((e: { payload: { rows: number } }) => e.payload.rows);
    expect(rowsEmitted.reduce((s: number, n: number) => s + n, 0)).toBe(chain.length);
  }, 240_000);

  it('after a reorg, an append output with a cursor column holds exactly the new chain\'s rows; replace too', async () => {
    const accounts = await anvil.rpc<string[]>('eth_accounts');
    // Replace blocks 800..999 with blocks of plain transfers: their logs are gone from the chain.
    const before = (await anvil.rpc<{ hash: string }>('eth_getBlockByNumber', ['0x3e7', false])).hash;
    await anvil.rpc('anvil_reorg', [200, [[{ from: accounts[1], to: accounts[2], value: '0x5' }, 10]]]);
    expect((await anvil.rpc<{ hash: string }>('eth_getBlockByNumber', ['0x3e7', false])).hash).not.toBe(before);
    // The ingest keeps only logs: it knows the range changed from the hash its files were written with.
    const run = await runSource(trace.baseUrl, TOKEN, 'tables', 'ingest');
    expect(run.events.map((e: { kind: string; start: string; end: string }) => `${e.kind} ${e.start}_${e.end}`)).toEqual(['invalidation 750_999', 'data 750_999']);
    const tasks = await dagSettled(trace.baseUrl, TOKEN, 'tables');
    expect(tasks.filter((t) => t.status !== 'succeeded')).toEqual([]);
    const chain = await anvil.rpc<{ blockNumber: string; logIndex: string; data: string }[]>('eth_getLogs', [{ fromBlock: '0x0', toBlock: '0x3e7' }]);
    const rows = await db.query(`SELECT block_number::int AS b, log_index::int AS i FROM ${await table('appended_logs_by_block')} ORDER BY 1, 2`);
    expect(rows.rows).toEqual(chain.map((l) => ({ b: Number.parseInt(l.blockNumber, 16), i: Number.parseInt(l.logIndex, 16) })).sort((x, y) => x.b - y.b || x.i - y.i));
    const perBlock = new Map<number, number>();
    for (const l of chain) perBlock.set(Number.parseInt(l.blockNumber, 16), (perBlock.get(Number.parseInt(l.blockNumber, 16)) ?? 0) + 1);
    const r = await db.query(`SELECT block_number::int AS block, logs::int AS logs FROM ${await table('logs_per_block')} ORDER BY 1`);
    expect(r.rows).toEqual([...perBlock.entries()].sort((x, y) => x[0] - y[0]).map(([block, logs]) => ({ block, logs })));
  }, 240_000);
});
