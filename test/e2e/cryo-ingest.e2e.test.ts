import { DuckDBInstance } from '@duckdb/node-api';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTraffic, startAnvil, TRANSFER_TOPIC, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { Client } from 'pg';
import { cpSync, existsSync, mkdirSync } from 'node:fs';
import { addMember, postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { jobTasksSucceeded, taskFinished } from '../support/tasks';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_cryo-ingest-test-dev-token-00000';
const BLOCKS = 1500;
const CHUNK = 500;
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';

const dag = (rpcUrl: string) => `name: chain
jobs:
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [blocks, transactions, logs], chunk_size: ${CHUNK}, start_block: 0, end_block: ${BLOCKS - 1}, confirmations: 0, batch_size: 50, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}, ${OUT}, ${OUT}]
  - name: transfers
    operator: sql
    inputs: [{from: {job: ingest, output: 2}}]
    config:
      sql: |
        SELECT block_number, count(*) AS transfers, CAST(sum(CAST(('0x' || right(hex(data), 16)) AS UBIGINT)) AS UBIGINT) AS amount
          FROM input_0 WHERE topic0 = from_hex('${TRANSFER_TOPIC.slice(2)}') GROUP BY block_number
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: blocks}
  - {job: ingest, output_index: 1, dataset_name: transactions}
  - {job: ingest, output_index: 2, dataset_name: logs}
  - {job: transfers, output_index: 0, dataset_name: transfers}
`;

/**
 * cryo_ingest against a real chain: anvil with ETH transfers and Transfer logs, ingested into
 * block-range Parquet through the real binary (all roles), then a sql job over the logs. What the
 * files hold is checked against what the chain reports over JSON-RPC, range by range.
 */
describe('cryo_ingest: anvil → block-range Parquet → sql', () => {
  let anvil: Anvil;
  let trace: TraceProcess;
  let dataDir: string;
  let duck: Awaited<ReturnType<typeof DuckDBInstance.create>>;
  let databaseUrl: string;

  const dataset = async (name: string) => (await call(trace.baseUrl, 'GET', `/v1/datasets/${name}`, { token: TOKEN })).body;
  /** The current version's files of a dataset, by range. */
  const files = async (name: string) => {
    const d = await dataset(name);
    const current = d.versions.find((v: { current: boolean }) => v.current);
    // The object key layout: org/{org_id}/dataset/{dataset_uuid}/version/{dataset_version}/, under the local store's directory.
    expect(current.location).toMatch(new RegExp(`^org/[0-9a-f-]{36}/dataset/${d.dataset_uuid}/version/${d.current_version}/$`));
    const dir = join(dataDir, 'objects', current.location);
    const start = (f: string) => Number(f.split('_')[0]);
    return readdirSync(dir).sort((a, b) => start(a) - start(b)).map((f) => join(dir, f));
  };
  const jobTasksFinished = (job: string) =>
    waitFor(async () => {
      const list = (await call(trace.baseUrl, 'GET', `/v1/tasks?dag=probes&job=${job}`, { token: TOKEN })).body as { status: string; error: string }[];
      return list.length > 0 && list.every((t) => ['succeeded', 'failed', 'canceled'].includes(t.status)) ? list : undefined;
    }, `probe ${job} to finish`, 60_000);
  const query = async (sql: string) => {
    const conn = await duck.connect();
    try {
      return (await conn.runAndReadAll(sql)).getRowObjectsJS();
    } finally {
      conn.closeSync();
    }
  };

  beforeAll(async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, BLOCKS, 60);
    dataDir = mkdtempSync(join(tmpdir(), 'trace-cryo-'));
    await chmod(dataDir, 0o755);
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { DATABASE_URL: (databaseUrl = await createTestDatabase('cryo')), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100' },
    });
    duck = await DuckDBInstance.create(':memory:');
  }, 120_000);
  afterAll(async () => {
    duck?.closeSync();
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
  });

  it('writes cryo-compatible Parquet whose counts and sums equal the chain, range by range, and the sql job derives from it', async () => {
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag(anvil.url))).status).toBe(201);
    const run = (await call(trace.baseUrl, 'POST', '/v1/dags/chain/jobs/ingest/runs', { token: TOKEN })).body.task_id;
    const finished = await taskFinished(trace.baseUrl, TOKEN, run, 120_000);
    if (finished.status !== 'succeeded') throw new Error(`ingest run ${finished.status}: ${JSON.stringify(finished.attempts)}`);
    // One data event per output per range, each with its explicit range and last block hash.
    expect(finished.events).toHaveLength(3 * (BLOCKS / CHUNK));

    const ranges = Array.from({ length: BLOCKS / CHUNK }, (_, k) => [k * CHUNK, (k + 1) * CHUNK - 1] as const);
    for (const name of ['blocks', 'transactions', 'logs']) {
      expect((await files(name)).map((f) => f.split('/').at(-1))).toEqual(ranges.map(([s, e]) => `${s}_${e}.parquet`));
    }
    const [blockFiles, txFiles, logFiles] = [await files('blocks'), await files('transactions'), await files('logs')];
    let totalTxs = 0;
    let totalLogs = 0;
    for (const [k, [start, end]] of ranges.entries()) {
      // What the chain says about this range, over JSON-RPC.
      const blocks = await Promise.all(Array.from({ length: end - start + 1 }, (_, i) => anvil.rpc<{ hash: string; transactions: { value: string }[] }>('eth_getBlockByNumber', [`0x${(start + i).toString(16)}`, true])));
      const txs = blocks.flatMap((b) => b.transactions);
      const value = txs.reduce((s, t) => s + BigInt(t.value), 0n);
      const logs = await anvil.rpc<unknown[]>('eth_getLogs', [{ fromBlock: `0x${start.toString(16)}`, toBlock: `0x${end.toString(16)}` }]);

      const [b] = await query(`SELECT count(*) AS n, min(block_number) AS lo, max(block_number) AS hi, '0x' || lower(hex(last(block_hash ORDER BY block_number))) AS last_hash FROM read_parquet('${blockFiles[k]}')`);
      expect(b).toEqual({ n: BigInt(end - start + 1), lo: start, hi: end, last_hash: blocks.at(-1)!.hash });
      const [t] = await query(`SELECT count(*) AS n, coalesce(sum(value_string::HUGEINT), 0)::VARCHAR AS value, count(*) FILTER (WHERE success) AS ok FROM read_parquet('${txFiles[k]}')`);
      expect(t).toEqual({ n: BigInt(txs.length), value: value.toString(), ok: BigInt(txs.length) });
      const [l] = await query(`SELECT count(*) AS n FROM read_parquet('${logFiles[k]}')`);
      expect(l!.n).toBe(BigInt(logs.length));
      totalTxs += txs.length;
      totalLogs += logs.length;
    }
    expect(totalTxs).toBe(61); // the contract deployment and 60 transactions
    expect(totalLogs).toBe(30);

    // cryo's column names and types, in cryo's order.
    const schema = await query(`SELECT name, type FROM parquet_schema('${txFiles[0]}') WHERE name <> 'duckdb_schema'`);
    expect(schema.map((c) => c.name)).toEqual([
      'block_number', 'transaction_index', 'transaction_hash', 'nonce', 'from_address', 'to_address', 'value_binary', 'value_string', 'value_f64', 'input',
      'gas_limit', 'gas_used', 'gas_price', 'transaction_type', 'max_priority_fee_per_gas', 'max_fee_per_gas', 'success', 'n_input_bytes', 'n_input_zero_bytes',
      'n_input_nonzero_bytes', 'chain_id',
    ]);
    const logSchema = await query(`SELECT name FROM parquet_schema('${logFiles[0]}') WHERE name <> 'duckdb_schema'`);
    expect(logSchema.map((c) => c.name)).toEqual(['block_number', 'transaction_index', 'log_index', 'transaction_hash', 'address', 'topic0', 'topic1', 'topic2', 'topic3', 'data', 'chain_id']);

    // The sql job ran once per logs range and wrote the same ranges; its totals match the chain's logs.
    await jobTasksSucceeded(trace.baseUrl, TOKEN, 'chain', 'transfers', BLOCKS / CHUNK, 60_000);
    const transferFiles = await files('transfers');
    expect(transferFiles.map((f) => f.split('/').at(-1))).toEqual(ranges.map(([s, e]) => `${s}_${e}.parquet`));
    const [sum] = await query(`SELECT sum(transfers)::INT AS n, sum(amount)::VARCHAR AS amount FROM read_parquet([${transferFiles.map((f) => `'${f}'`).join(',')}])`);
    const chainLogs = await anvil.rpc<{ data: string }[]>('eth_getLogs', [{ fromBlock: '0x0', toBlock: 'latest', topics: [TRANSFER_TOPIC] }]);
    expect(sum).toEqual({ n: chainLogs.length, amount: chainLogs.reduce((s, l) => s + BigInt(l.data), 0n).toString() });
  }, 240_000);

  it('a second run resumes after the last range and writes nothing new; the files are untouched', async () => {
    const before = await Promise.all(['blocks', 'transactions', 'logs'].map(files));
    const run = (await call(trace.baseUrl, 'POST', '/v1/dags/chain/jobs/ingest/runs', { token: TOKEN })).body.task_id;
    const finished = await taskFinished(trace.baseUrl, TOKEN, run, 60_000);
    if (finished.status !== 'succeeded') throw new Error(`ingest run ${finished.status}: ${JSON.stringify(finished.attempts)}`);
    // It re-announces the newest range (its own events; a crash before them would otherwise lose them) and nothing else.
    expect(finished.events.map((e: { start: string; end: string }) => `${e.start}_${e.end}`)).toEqual(Array(3).fill(`${BLOCKS - CHUNK}_${BLOCKS - 1}`));
    expect(await Promise.all(['blocks', 'transactions', 'logs'].map(files))).toEqual(before);
  }, 120_000);

  it('purge deletes a version no DAG points at (org admins only), and refuses the current one', async () => {
    const d = await dataset('blocks');
    const current = d.versions.find((v: { current: boolean }) => v.current);
    const purge = (version: string, token = TOKEN) => call(trace.baseUrl, 'POST', `/v1/datasets/blocks/versions/${version}/purge`, { token });
    expect((await purge(current.dataset_version)).body.error.code).toBe('version_in_use');
    expect((await purge('not-a-uuid')).status).toBe(400);
    expect((await purge('00000000-0000-4000-8000-000000000000')).status).toBe(404);
    const analyst = await addMember(trace.baseUrl, TOKEN, 'dev', 'analyst@cryo.test', ['analyst']);
    expect((await purge(current.dataset_version, analyst.token)).status).toBe(403);

    // An older version of the dataset, with files, that no DAG points at any more.
    const db = new Client({ connectionString: databaseUrl });
    await db.connect();
    const { rows } = await db.query(
      `INSERT INTO dataset_versions (dataset_version, dataset_uuid, dag_version_id, status, location)
       SELECT gen_random_uuid(), dataset_uuid, dag_version_id, 'ready', '' FROM dataset_versions WHERE dataset_version = $1
       RETURNING dataset_version`,
      [current.dataset_version],
    );
    const old = rows[0].dataset_version as string;
    const location = current.location.replace(current.dataset_version, old);
    await db.query(`UPDATE dataset_versions SET location = $2 WHERE dataset_version = $1`, [old, location]);
    await db.end();
    const oldDir = join(dataDir, 'objects', location);
    mkdirSync(oldDir, { recursive: true });
    cpSync(join(dataDir, 'objects', current.location), oldDir, { recursive: true });

    const purged = await purge(old);
    expect(purged.status).toBe(200);
    expect(purged.body).toMatchObject({ dataset_name: 'blocks', dataset_version: old, status: 'purged', deleted: `${BLOCKS / CHUNK} object(s) under ${location}` });
    expect(existsSync(oldDir)).toBe(false);
    expect((await dataset('blocks')).versions.find((v: { dataset_version: string }) => v.dataset_version === old).status).toBe('purged');
    expect((await files('blocks')).length).toBe(BLOCKS / CHUNK); // the current version is untouched
    expect((await purge(old)).body.deleted).toBe('nothing: it was already purged');
  });

  it('SQL from a DAG cannot read files, write files, loosen its settings, run two statements or take the wrapper\'s memory', async () => {
    const probe = (name: string, sql: string) => `  - name: ${name}
    operator: sql
    max_attempts: 1
    inputs: [{from: {dataset: logs}}]
    config: {sql: ${JSON.stringify(sql)}}
    outputs: [${OUT}]`;
    const yaml = `name: probes
jobs:
${probe('read_file', "SELECT * FROM read_csv('/etc/passwd')")}
${probe('read_store', `SELECT * FROM read_parquet('${join(dataDir, 'objects')}/**/*.parquet')`)}
${probe('write_file', "COPY (SELECT 1) TO '/tmp/trace-probe.csv'")}
${probe('loosen', 'SET enable_external_access = true')}
${probe('two', 'SELECT 1; SELECT 2')}
${probe('plain', 'SELECT count(*) AS n FROM input_0')}
${probe('bomb', 'SELECT count(*) AS n FROM (SELECT list(x) FROM (SELECT unnest(generate_series(1, 1000000000)) x))')}
`;
    // The wrapper runs in this process: its memory must stay flat while the bomb runs (ADR 0020).
    const status = () => readFileSync(`/proc/${trace.child.pid}/status`, 'utf8');
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(status())![1]) * 1024;
    const before = rss();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rss())), 20);
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, yaml)).status).toBe(201);
    // Another ingest run re-announces its last range: each probe job gets one task for it.
    const run = (await call(trace.baseUrl, 'POST', '/v1/dags/chain/jobs/ingest/runs', { token: TOKEN })).body.task_id;
    expect((await taskFinished(trace.baseUrl, TOKEN, run, 60_000)).status).toBe('succeeded');
    const errors: Record<string, string> = {};
    for (const job of ['read_file', 'read_store', 'write_file', 'loosen', 'two', 'plain', 'bomb']) {
      const [t] = await jobTasksFinished(job);
      errors[job] = t.status === 'succeeded' ? 'succeeded' : t.error;
    }
    clearInterval(sampler);
    console.log(`sql memory bomb: wrapper RSS ${Math.round(before / 1e6)} MB before, peak ${Math.round(peak / 1e6)} MB`);
    expect(peak - before).toBeLessThan(300 * 1024 * 1024);
    expect(errors.bomb).toMatch(/^sql: the SQL needed more memory than its limit of 1GB: Out of Memory Error/);
    expect((await call(trace.baseUrl, 'GET', '/health')).status).toBe(200);
    expect(errors.read_file).toMatch(/Permission Error: Cannot access file "\/etc\/passwd"/);
    expect(errors.read_store).toMatch(/Permission Error/);
    // Refused when DuckDB binds it, before it could run.
    expect(errors.write_file).toMatch(/Permission Error: Cannot access file "\/tmp\/trace-probe.csv"/);
    expect(existsSync('/tmp/trace-probe.csv')).toBe(false);
    expect(errors.loosen).toBe('config.sql: must be a SELECT statement');
    expect(errors.two).toBe('config.sql: must be exactly one statement, got 2');
    expect(errors.plain).toBe('succeeded');
  }, 120_000);

  it('follow_head keeps ingesting as the chain grows, until the run is canceled', async () => {
    const head = Number.parseInt(await anvil.rpc<string>('eth_blockNumber'), 16);
    const start = head + 1;
    const yaml = `name: follower
jobs:
  - name: ingest
    operator: cryo_ingest
    timeout: 10m
    config: {datatypes: [blocks], chunk_size: 100, start_block: ${start}, confirmations: 5, follow_head: true, poll_interval_ms: 100, rpc_url: "${anvil.url}"}
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: followed_blocks}
`;
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, yaml)).status).toBe(201);
    const run = (await call(trace.baseUrl, 'POST', '/v1/dags/follower/jobs/ingest/runs', { token: TOKEN })).body.task_id;
    const task = () => call(trace.baseUrl, 'GET', `/v1/tasks/${run}`, { token: TOKEN }).then((r) => r.body);
    await waitFor(async () => ((await task()).status === 'running' ? true : undefined), 'the follower to start', 30_000);
    expect((await task()).events).toEqual([]); // nothing is 5 blocks deep yet
    await anvil.rpc('anvil_mine', ['0xc8']); // 200 blocks: two ranges become safe
    const ranges = await waitFor(async () => {
      const events = (await task()).events as { start: string; end: string }[];
      return events.length >= 1 ? events.map((e) => `${e.start}_${e.end}`) : undefined;
    }, 'the follower to ingest new blocks', 30_000);
    expect(ranges[0]).toBe(`${start}_${start + 99}`);
    await anvil.rpc('anvil_mine', ['0x64']);
    await waitFor(async () => ((await task()).events.length >= 2 ? true : undefined), 'a later range', 30_000);
    expect((await call(trace.baseUrl, 'POST', `/v1/tasks/${run}/cancel`, { token: TOKEN })).body.cancel_requested).toBe(true);
    const finished = await taskFinished(trace.baseUrl, TOKEN, run, 30_000);
    expect(finished.status).toBe('canceled');
    expect((await files('followed_blocks')).length).toBe(finished.events.length);
  }, 120_000);
});
