import { DuckDBInstance } from '@duckdb/node-api';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'pg';
import { generateTraffic, startAnvil, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { addMember, postYaml } from '../support/org-fixture';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { currentLocation, dagSettled, jobEvents, runSource } from '../support/dags';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_operator-inputs-test-dev-token-000';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const SHAPE = 'org/{org_id}/dataset/{dataset_uuid}/version/{dataset_version}/{start}_{end}.parquet';
const ingest = (rpcUrl: string, end: number) => `
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [blocks], chunk_size: 250, start_block: 0, end_block: ${end}, confirmations: 0, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}]`;

/** Org B's data: blocks 0..499 in two files, published. */
const VAULT = (rpcUrl: string) => `name: vault
jobs:${ingest(rpcUrl, 499)}
publish:
  - {job: ingest, output_index: 0, dataset_name: vault_blocks}
`;

/** Org A's private dataset, in a DAG of its own (empty read_roles: its deployers and org admins only). */
const PRIVATE = (rpcUrl: string) => `name: private_dag
jobs:${ingest(rpcUrl, 499)}
publish:
  - {job: ingest, output_index: 0, dataset_name: a_private}
`;

/** The legitimate chain: ingest → range_aggregator (no compaction: its manifests name ingest's files) → range_splitter → sql. */
const CHAIN = (rpcUrl: string) => `name: chain
jobs:${ingest(rpcUrl, 999)}
  - name: agg
    operator: range_aggregator
    inputs: [{from: {job: ingest, output: 0}}]
    max_attempts: 1
    config: {range_size: 500}
    outputs: [${OUT}]
  - name: split
    operator: range_splitter
    inputs: [{from: {job: agg, output: 0}}]
    max_attempts: 1
    config: {range_size: 125}
    outputs: [${OUT}]
  - name: per_split
    operator: sql
    inputs: [{from: {job: split, output: 0}}]
    max_attempts: 1
    config: {sql: "SELECT count(*) AS blocks, min(block_number) AS first_block, max(block_number) AS last_block FROM input_0"}
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: chain_blocks}
  - {job: per_split, output_index: 0, dataset_name: chain_counts}
`;

/** Org A's deployer: a user source whose payloads name other data, into every built-in that reads or passes on files. */
const HEIST = (events: unknown[]) => {
  const consumer = (name: string, operator: string, config: string, output = OUT, from = 'src') => `
  - name: ${name}
    operator: ${operator}
    max_attempts: 1
    inputs: [{from: {job: ${from}, output: 0}}]
    config: ${config}
    outputs: [${output}]`;
  return `name: heist
jobs:
  - name: src
    operator: user
    language: javascript
    entry_point: payload-source.js
    config: ${JSON.stringify({ events })}
    outputs: [${OUT}]${consumer('steal_sql', 'sql', '{sql: "SELECT * FROM input_0"}')}${consumer('steal_pg', 'sql', '{sql: "SELECT * FROM input_0"}', '{backend: postgres, update_strategy: replace, cursor: block_number}')}${consumer('steal_compact', 'range_aggregator', '{range_size: 10, compact: true}')}${consumer('steal_pass', 'range_aggregator', '{range_size: 10}')}${consumer('steal_split', 'range_splitter', '{range_size: 5}')}${consumer('after_pass', 'sql', '{sql: "SELECT * FROM input_0"}', OUT, 'steal_pass')}${consumer('after_split', 'sql', '{sql: "SELECT * FROM input_0"}', OUT, 'steal_split')}
publish:
  - {job: src, output_index: 0, dataset_name: heist_src}
  - {job: steal_sql, output_index: 0, dataset_name: heist_sql}
  - {job: steal_pg, output_index: 0, dataset_name: heist_pg}
  - {job: steal_compact, output_index: 0, dataset_name: heist_compact}
  - {job: steal_pass, output_index: 0, dataset_name: heist_pass}
  - {job: steal_split, output_index: 0, dataset_name: heist_split}
`;
};

/**
 * Built-in operators read and pass on only files the platform's records allow: an event payload
 * written by user code that names another org's file, a query result, a `../` or absolute path,
 * or a private dataset of another DAG in the same org fails the task with a clear error, and
 * nothing of it is read or passed on; the legitimate pass-through chain still works.
 */
describe('what built-in operators read: the platform\'s records, never a payload\'s say-so', () => {
  let anvil: Anvil;
  let trace: TraceProcess;
  let dataDir: string;
  let db: Client;
  let victimToken: string;
  let mallory: { token: string };
  const api = (method: string, path: string, token = TOKEN, body?: unknown) => call(trace.baseUrl, method, path, { token, body });
  const filesUnder = (location: string) => {
    const dir = join(dataDir, 'objects', location);
    return existsSync(dir) ? readdirSync(dir).sort() : [];
  };
  const tasksOf = async (dag: string, job: string) => (await api('GET', `/v1/tasks?dag=${dag}&job=${job}&limit=1000`)).body as { id: string; status: string; error: string | null }[];

  beforeAll(async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, 1000, 20);
    dataDir = mkdtempSync(join(tmpdir(), 'trace-opinputs-'));
    await chmod(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('opinputs');
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '100' },
    });
    db = await connect(databaseUrl);
    const victim = await api('POST', '/v1/orgs', TOKEN, { name: 'victim', admin_email: 'root@victim.test' });
    expect(victim.status).toBe(201);
    victimToken = victim.body.token.token;
    mallory = await addMember(trace.baseUrl, TOKEN, 'dev', 'mallory@dev.test', ['deployer']);
  }, 120_000);
  afterAll(async () => {
    await db?.end();
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
  });

  it('the legitimate chain works: a splitter passes on an unrecorded aggregator\'s manifest of ingest files, and sql reads them', async () => {
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, CHAIN(anvil.url))).status).toBe(201);
    await runSource(trace.baseUrl, TOKEN, 'chain', 'ingest');
    // ingest, its four ranges into agg, agg's two manifests into split (a failure shows here, with its error) ...
    expect((await dagSettled(trace.baseUrl, TOKEN, 'chain', 1 + 4 + 2)).filter((t) => t.status !== 'succeeded')).toEqual([]);
    // ... and split's eight sub-ranges into per_split.
    expect((await dagSettled(trace.baseUrl, TOKEN, 'chain', 1 + 4 + 2 + 8)).filter((t) => t.status !== 'succeeded')).toEqual([]);
    // The manifests and the sub-ranges name ingest's files, outside their own dataset versions:
    // the operators asked the dispatcher, and the lineage allowed them.
    const blocks = await currentLocation(trace.baseUrl, TOKEN, 'chain_blocks');
    const subs = (await jobEvents(trace.baseUrl, TOKEN, 'chain', 'split')).filter((e) => e.kind === 'data');
    expect(subs).toHaveLength(8);
    for (const e of subs) {
      const window = Number(e.start) < 500 ? 0 : 500;
      expect(e.payload.files).toEqual([window, window + 250].map((s) => `${blocks}${s}_${s + 249}.parquet`));
    }
    const counts = filesUnder(await currentLocation(trace.baseUrl, TOKEN, 'chain_counts'));
    expect(counts.map((f) => Number(f.split('_')[0])).sort((a, b) => a - b)).toEqual([0, 125, 250, 375, 500, 625, 750, 875]);
    const rows = await readParquetRows(join(dataDir, 'objects', await currentLocation(trace.baseUrl, TOKEN, 'chain_counts')));
    expect(rows.sort((a, b) => a.first_block - b.first_block)).toEqual(Array.from({ length: 8 }, (_, k) => ({ blocks: 125, first_block: 125 * k, last_block: 125 * k + 124 })));
  }, 240_000);

  it('a payload naming another org\'s file, a query result, a ../ or absolute path, or a private dataset of another DAG fails each task, and nothing is read', async () => {
    // Org B (the victim): a dataset with data, and a batch query result.
    expect((await postYaml(trace.baseUrl, '/v1/dags', victimToken, VAULT(anvil.url))).status).toBe(201);
    await runSource(trace.baseUrl, victimToken, 'vault', 'ingest');
    const vault = await currentLocation(trace.baseUrl, victimToken, 'vault_blocks');
    const victimOrg = vault.split('/')[1]!;
    const victimFile = `${vault}0_249.parquet`;
    expect(existsSync(join(dataDir, 'objects', victimFile))).toBe(true);
    const submitted = await api('POST', '/v1/query', victimToken, { sql: 'SELECT * FROM vault_blocks', mode: 'batch' });
    expect(submitted.status).toBe(202);
    await waitFor(async () => (await api('GET', `/v1/query/${submitted.body.query_id}`, victimToken)).body.status === 'succeeded', 'the victim\'s batch query', 60_000);
    const victimResult = `org/${victimOrg}/query/${submitted.body.query_id}/result.parquet`;
    expect(existsSync(join(dataDir, 'objects', victimResult))).toBe(true);

    // Org A: a private dataset of another DAG, which mallory's DAG may not read (deploying a
    // reader of it is refused, as the read rule says).
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, PRIVATE(anvil.url))).status).toBe(201);
    await runSource(trace.baseUrl, TOKEN, 'private_dag', 'ingest');
    const privateFile = `${await currentLocation(trace.baseUrl, TOKEN, 'a_private')}0_249.parquet`;
    const ownOrg = privateFile.split('/')[1]!;
    const reader = `name: reader\njobs:\n  - name: r\n    operator: sql\n    inputs: [{from: {dataset: a_private}}]\n    config: {sql: "SELECT * FROM input_0"}\n    outputs: [${OUT}]\n`;
    expect((await postYaml(trace.baseUrl, '/v1/dags', mallory.token, reader)).status).toBe(400);

    const traversal = `org/${ownOrg}/../${victimOrg}/dataset/${vault.split('/')[3]}/version/${vault.split('/')[5]}/0_249.parquet`;
    const absolute = join(dataDir, 'objects', victimFile);
    const attacks: { payload: Record<string, unknown>; refused: string; why: (op: string, src: string) => string }[] = [
      { payload: { key: victimFile }, refused: victimFile, why: (op) => `${op}: input file "${victimFile}" belongs to another org; event payloads cannot point at other data` },
      { payload: { key: victimResult }, refused: victimResult, why: (op) => `${op}: input file "${victimResult}" is not a dataset file key (${SHAPE}); event payloads cannot point at other data` },
      { payload: { key: traversal }, refused: traversal, why: (op) => `${op}: input file "${traversal}" is not a dataset file key (${SHAPE}); event payloads cannot point at other data` },
      { payload: { key: absolute }, refused: absolute, why: (op) => `${op}: input file "${absolute}" is not a dataset file key (${SHAPE}); event payloads cannot point at other data` },
      { payload: { key: privateFile }, refused: privateFile, why: (op, src) => `${op}: input file "${privateFile}" is outside the input dataset version (${src}) and its lineage; event payloads cannot point at other data` },
      { payload: { files: [privateFile, victimFile] }, refused: victimFile, why: (op) => `${op}: input file "${victimFile}" belongs to another org; event payloads cannot point at other data` },
    ];
    // One window (of 10 blocks) per event: each completes its window at once, so an aggregator
    // that recorded the part would compact or pass on its files in the same task.
    const events = attacks.map((a, i) => ({ start: 10 * i, end: 10 * i + 9, payload: a.payload }));
    expect((await postYaml(trace.baseUrl, '/v1/dags', mallory.token, HEIST(events))).status).toBe(201);
    await runSource(trace.baseUrl, mallory.token, 'heist', 'src');
    const settled = await dagSettled(trace.baseUrl, TOKEN, 'heist', 1 + 5 * attacks.length);
    const src = await currentLocation(trace.baseUrl, TOKEN, 'heist_src');

    for (const [job, op] of [['steal_sql', 'sql'], ['steal_pg', 'sql'], ['steal_compact', 'range_aggregator'], ['steal_pass', 'range_aggregator'], ['steal_split', 'range_splitter']] as const) {
      const tasks = await tasksOf('heist', job);
      expect({ job, statuses: tasks.map((t) => t.status) }).toEqual({ job, statuses: attacks.map(() => 'failed') });
      expect(tasks.map((t) => t.error).sort()).toEqual(attacks.map((a) => a.why(op, src)).sort());
      expect(await jobEvents(trace.baseUrl, TOKEN, 'heist', job)).toEqual([]);
    }
    // Nothing was passed on, so the readers downstream of the pass-through jobs never ran.
    expect(settled.filter((t) => t.job === 'after_pass' || t.job === 'after_split')).toEqual([]);
    // Nothing was written: no files in any output, no table for the Postgres one, no operator
    // state holding a refused key (the part is checked before it is recorded).
    for (const name of ['heist_src', 'heist_sql', 'heist_compact', 'heist_pass', 'heist_split']) expect({ name, files: filesUnder(await currentLocation(trace.baseUrl, TOKEN, name)) }).toEqual({ name, files: [] });
    const table = await currentLocation(trace.baseUrl, TOKEN, 'heist_pg');
    expect((await db.query(`SELECT to_regclass($1) AS t`, [table])).rows).toEqual([{ t: null }]);
    expect((await db.query(`SELECT s.state FROM operator_state s JOIN dags g ON g.id = s.dag_id WHERE g.name = 'heist'`)).rows).toEqual([]);
    // The victim's data is where it was, untouched.
    expect(filesUnder(vault)).toEqual(['0_249.parquet', '250_499.parquet']);
  }, 240_000);

  it('GET /internal/input-locations takes an attempt token only', async () => {
    for (const token of [TOKEN, mallory.token, 'tra_not-a-real-attempt-token']) {
      const res = await call(trace.baseUrl, 'GET', '/internal/input-locations', { token });
      expect(res.status).toBe(401);
    }
  });
});

/** Every row of every Parquet file in a directory, numbers as numbers. */
async function readParquetRows(dir: string): Promise<Record<string, number>[]> {
  const duck = await DuckDBInstance.create(':memory:');
  const conn = await duck.connect();
  try {
    const rows = (await conn.runAndReadAll(`SELECT * FROM read_parquet('${dir}/*.parquet')`)).getRowObjectsJS();
    return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Number(v)])));
  } finally {
    conn.closeSync();
    duck.closeSync();
  }
}
