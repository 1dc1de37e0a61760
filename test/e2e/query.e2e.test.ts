import { DuckDBInstance } from '@duckdb/node-api';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { Client } from 'pg';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTraffic, startAnvil, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { addMember, postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { dagSettled, runSource } from '../support/dags';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_query-test-dev-token-00000000000';
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const dag = (rpcUrl: string) => `name: chainq
jobs:
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [blocks, logs], chunk_size: 250, start_block: 0, end_block: 999, confirmations: 0, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}, ${OUT}]
  - name: per_block
    operator: sql
    inputs: [{from: {job: ingest, output: 1}}]
    config: {sql: "SELECT block_number, count(*) AS logs FROM input_0 GROUP BY block_number"}
    outputs: [{backend: postgres, update_strategy: replace, cursor: block_number}]
  - name: hidden
    operator: sql
    inputs: [{from: {job: ingest, output: 0}}]
    config: {sql: "SELECT block_number FROM input_0"}
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: q_blocks}
  - {job: ingest, output_index: 1, dataset_name: q_logs}
  - {job: per_block, output_index: 0, dataset_name: q_logs_per_block}
`;

/**
 * POST /v1/query through the real binary: a Parquet dataset joined with a Postgres one, each
 * pinned; the read rule (unreadable = nonexistent, across orgs too); the hardening probes; the
 * interactive limits (truncation, a statement interrupted at its timeout while others are served).
 */
describe('the Query Service', () => {
  let anvil: Anvil;
  let trace: TraceProcess;
  let databaseUrl: string;
  let dataDir: string;
  const q = (sql: string, token = TOKEN, extra: Record<string, unknown> = {}) => call(trace.baseUrl, 'POST', '/v1/query', { token, body: { sql, mode: 'interactive', ...extra } });

  beforeAll(async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, 1000, 40);
    dataDir = mkdtempSync(join(tmpdir(), 'trace-query-'));
    await chmod(dataDir, 0o755);
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { DATABASE_URL: (databaseUrl = await createTestDatabase('query')), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100', TRACE_QUERY_TIMEOUT_MS: '1500', TRACE_QUERY_MAX_ROWS: '500' },
    });
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag(anvil.url))).status).toBe(201);
    await runSource(trace.baseUrl, TOKEN, 'chainq', 'ingest');
    expect((await dagSettled(trace.baseUrl, TOKEN, 'chainq', 9)).every((t) => t.status === 'succeeded')).toBe(true);
  }, 120_000);
  afterAll(async () => {
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
  });

  it('joins a Parquet dataset with a Postgres dataset, each pinned to its current version', async () => {
    const res = await q('SELECT b.block_number, p.logs FROM q_blocks b JOIN q_logs_per_block p USING (block_number) ORDER BY b.block_number');
    expect(res.status).toBe(200);
    const logs = await anvil.rpc<{ blockNumber: string }[]>('eth_getLogs', [{ fromBlock: '0x0', toBlock: '0x3e7' }]);
    const perBlock = new Map<number, number>();
    for (const l of logs) perBlock.set(Number.parseInt(l.blockNumber, 16), (perBlock.get(Number.parseInt(l.blockNumber, 16)) ?? 0) + 1);
    expect(res.body.rows).toEqual([...perBlock.entries()].sort((a, b) => a[0] - b[0]));
    expect(res.body.columns).toEqual([{ name: 'block_number', type: 'UINTEGER' }, { name: 'logs', type: 'BIGINT' }]);
    expect(res.body).toMatchObject({ row_count: perBlock.size, truncated: false });
    const current = async (name: string) => (await call(trace.baseUrl, 'GET', `/v1/datasets/${name}`, { token: TOKEN })).body.current_version;
    expect(res.body.pinned).toEqual({ q_blocks: await current('q_blocks'), q_logs_per_block: await current('q_logs_per_block') });
    expect(typeof res.body.elapsed_ms).toBe('number');
    // Parameters bind as values; CTEs are the query's own names.
    const p = await q('WITH recent AS (SELECT * FROM q_blocks WHERE block_number >= $1) SELECT count(*) AS n FROM recent', TOKEN, { params: [900] });
    expect(p.body.rows).toEqual([[100]]);
    // A trailing comment or semicolon is the user's business, not the wrapper's.
    expect((await q('SELECT count(*) FROM q_blocks; -- all of them')).body.rows).toEqual([[1000]]);
    expect((await q('SELECT count(*) FROM q_blocks -- all of them')).body.rows).toEqual([[1000]]);
    expect((await q('SELECT count(*) FROM q_blocks;')).body.rows).toEqual([[1000]]);
  });

  it('applies the read rule: a dataset you may not read, an unpublished one and another org\'s all look like nothing', async () => {
    const analyst = await addMember(trace.baseUrl, TOKEN, 'dev', 'analyst@query.test', ['analyst']);
    expect((await call(trace.baseUrl, 'PUT', '/v1/datasets/q_blocks/read-roles', { token: TOKEN, body: { read_roles: ['analyst'] } })).status).toBe(200);
    expect((await q('SELECT count(*) FROM q_blocks', analyst.token)).body.rows).toEqual([[1000]]);
    const hidden = await q('SELECT count(*) FROM q_logs', analyst.token);
    const missing = await q('SELECT count(*) FROM no_such_dataset', analyst.token);
    expect([hidden.status, missing.status]).toEqual([404, 404]);
    expect(hidden.body.error).toEqual({ code: 'dataset_not_found', message: 'no dataset named "q_logs" (or you may not read it)' });
    expect(missing.body.error.message).toBe('no dataset named "no_such_dataset" (or you may not read it)');
    // Names are matched as written; one no dataset can have says what names look like.
    const upper = await q('SELECT count(*) FROM Q_Blocks', analyst.token);
    expect([upper.status, upper.body.error.message]).toEqual([404, 'no dataset named "Q_Blocks" (or you may not read it); dataset names are lower snake_case, ^[a-z][a-z0-9_]{0,127}$ (did you mean "q_blocks"?)']);
    // The unpublished output of job "hidden" has no name at all; an internal table name is not a dataset either.
    expect((await q('SELECT * FROM dataset_versions', analyst.token)).status).toBe(404);
    // Another org's admin sees none of dev's datasets.
    const acme = await call(trace.baseUrl, 'POST', '/v1/orgs', { token: TOKEN, body: { name: 'acme', admin_email: 'root@acme.test' } });
    expect(acme.status).toBe(201);
    const other = await q('SELECT count(*) FROM q_blocks', acme.body.token.token);
    expect(other.status).toBe(404);
    expect(other.body.error.code).toBe('dataset_not_found');
  });

  it('refuses every hardening probe with a clear 4xx and no stack trace', async () => {
    const probes: [string, number, string][] = [
      ["SELECT * FROM read_csv('/etc/passwd')", 400, 'function_not_allowed'],
      ["SELECT * FROM read_parquet('/tmp/*/objects/**/*.parquet')", 400, 'function_not_allowed'],
      ['SELECT * FROM duckdb_secrets()', 400, 'function_not_allowed'],
      ["COPY q_blocks TO '/tmp/trace-query-probe.csv'", 400, 'statement_not_allowed'],
      ["ATTACH '/tmp/trace-query-probe.db'", 400, 'statement_not_allowed'],
      ['INSTALL httpfs', 400, 'statement_not_allowed'],
      ['LOAD httpfs', 400, 'statement_not_allowed'],
      ["SET memory_limit = '100GB'", 400, 'statement_not_allowed'],
      ['PRAGMA enable_external_access', 400, 'statement_not_allowed'],
      ['SELECT 1; SELECT 2', 400, 'statement_not_allowed'],
      ['SELECT * FROM main.q_blocks', 400, 'name_not_allowed'],
      ["SELECT * FROM q_blocks WHERE block_number = (SELECT count(*) FROM read_text('/etc/hostname'))", 400, 'function_not_allowed'],
      ['SELEC nonsense', 400, 'invalid_sql'],
      ['SELECT no_such_column FROM q_blocks', 400, 'query_failed'],
    ];
    for (const [sql, status, code] of probes) {
      const res = await q(sql);
      expect({ sql, status: res.status, code: res.body.error?.code }).toEqual({ sql, status, code });
      expect(res.text).not.toMatch(/\n\s+at /);
    }
    expect((await q('SELECT 1', TOKEN, { mode: 'bulk' })).status).toBe(400);
    expect((await call(trace.baseUrl, 'GET', '/v1/query/not-a-uuid', { token: TOKEN })).status).toBe(400);
    expect((await q('', TOKEN)).status).toBe(400);
  });

  it('truncates at the row limit, and interrupts a query at its timeout while serving others', async () => {
    const big = await q('SELECT * FROM q_blocks ORDER BY block_number');
    expect(big.body).toMatchObject({ row_count: 500, truncated: true });
    expect(big.body.rows).toHaveLength(500);

    const slow = q('SELECT count(*) FROM q_blocks a, q_blocks b, q_blocks c, q_blocks d WHERE a.gas_used + b.gas_used + c.gas_used + d.gas_used = 42');
    const meanwhile = await q('SELECT count(*) FROM q_logs');
    expect(meanwhile.status).toBe(200);
    const interrupted = await slow;
    expect(interrupted.status).toBe(408);
    expect(interrupted.body.error).toEqual({ code: 'query_timeout', message: 'the query was interrupted after 1500 ms (TRACE_QUERY_TIMEOUT_MS)' });
    expect((await q('SELECT count(*) FROM q_blocks')).body.rows).toEqual([[1000]]);
  });

  it('batch mode: 202 with the pinned versions, runs in the background, its whole result as Parquet, for its submitter only', async () => {
    const submitted = await q('SELECT block_number, gas_used FROM q_blocks ORDER BY block_number', TOKEN, { mode: 'batch' });
    expect(submitted.status).toBe(202);
    const current = (await call(trace.baseUrl, 'GET', '/v1/datasets/q_blocks', { token: TOKEN })).body.current_version;
    expect(submitted.body).toMatchObject({ status: 'running', pinned: { q_blocks: current } });
    const id = submitted.body.query_id as string;
    const done = await waitFor(async () => {
      const s = (await call(trace.baseUrl, 'GET', `/v1/query/${id}`, { token: TOKEN })).body;
      return s.status !== 'running' ? s : undefined;
    }, 'the batch query to finish', 60_000);
    // No row limit in batch mode: all 1,000 rows (the interactive limit here is 500).
    expect(done).toMatchObject({ query_id: id, status: 'succeeded', row_count: 1000, pinned: { q_blocks: current }, result: { format: 'parquet', url: `/v1/query/${id}/result` }, error: null });
    const res = await fetch(`${trace.baseUrl}${done.result.url}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.headers.get('content-type')).toBe('application/vnd.apache.parquet');
    const path = join(mkdtempSync(join(tmpdir(), 'trace-query-result-')), 'r.parquet');
    writeFileSync(path, Buffer.from(await res.arrayBuffer()));
    const duck = await DuckDBInstance.create(':memory:');
    const conn = await duck.connect();
    expect((await conn.runAndReadAll(`SELECT count(*)::INT AS n, min(block_number)::INT AS lo, max(block_number)::INT AS hi FROM read_parquet('${path}')`)).getRowObjectsJS()).toEqual([{ n: 1000, lo: 0, hi: 999 }]);
    conn.closeSync();
    duck.closeSync();

    // Another user of the org cannot see it; bad SQL and unknown datasets are refused at submission.
    const other = await addMember(trace.baseUrl, TOKEN, 'dev', 'other@query.test', ['analyst']);
    expect((await call(trace.baseUrl, 'GET', `/v1/query/${id}`, { token: other.token })).status).toBe(404);
    expect((await call(trace.baseUrl, 'GET', `/v1/query/${id}/result`, { token: other.token })).status).toBe(404);
    expect((await q('SELECT * FROM nowhere', TOKEN, { mode: 'batch' })).status).toBe(404);
    expect((await q("COPY q_blocks TO '/tmp/x'", TOKEN, { mode: 'batch' })).status).toBe(400);
    // A failure while running is recorded on the run.
    const failing = await q("SELECT CAST('not a number' AS INTEGER) FROM q_blocks", TOKEN, { mode: 'batch' });
    const failed = await waitFor(async () => {
      const s = (await call(trace.baseUrl, 'GET', `/v1/query/${failing.body.query_id}`, { token: TOKEN })).body;
      return s.status !== 'running' ? s : undefined;
    }, 'the failing batch query', 60_000);
    expect(failed).toMatchObject({ status: 'failed', result: null });
    expect(failed.error).toMatch(/Conversion Error/);
    expect((await call(trace.baseUrl, 'GET', `/v1/query/${failing.body.query_id}/result`, { token: TOKEN })).body.error.code).toBe('result_not_ready');
  });

  it('pins each dataset when the query starts: a version swap after that does not move it; the next query sees the new version', async () => {
    const d = (await call(trace.baseUrl, 'GET', '/v1/datasets/q_blocks', { token: TOKEN })).body;
    const old = d.versions.find((v: { current: boolean }) => v.current);
    // A second version of q_blocks holding only its first range, as a rebuild would leave it.
    const db = new Client({ connectionString: databaseUrl });
    await db.connect();
    const { rows } = await db.query(
      `INSERT INTO dataset_versions (dataset_version, dataset_uuid, dag_version_id, status, location)
       SELECT gen_random_uuid(), dataset_uuid, dag_version_id, 'ready', '' FROM dataset_versions WHERE dataset_version = $1 RETURNING dataset_version`,
      [old.dataset_version],
    );
    const next = rows[0].dataset_version as string;
    const location = old.location.replace(old.dataset_version, next);
    await db.query(`UPDATE dataset_versions SET location = $2 WHERE dataset_version = $1`, [next, location]);
    mkdirSync(join(dataDir, 'objects', location), { recursive: true });
    copyFileSync(join(dataDir, 'objects', old.location, '0_249.parquet'), join(dataDir, 'objects', location, '0_249.parquet'));

    // Started before the swap (a batch query is pinned when it is accepted) ...
    const before = await q('SELECT count(*) AS n FROM q_blocks', TOKEN, { mode: 'batch' });
    expect(before.body.pinned).toEqual({ q_blocks: old.dataset_version });
    // ... the swap: one statement moves the DAG's pointer to the new version ...
    await db.query(`UPDATE dag_dataset_pointers SET dataset_version = $1 WHERE dataset_version = $2`, [next, old.dataset_version]);
    // ... a query started after it sees only the new version ...
    const after = await q('SELECT count(*) AS n FROM q_blocks');
    expect(after.body).toMatchObject({ rows: [[250]], pinned: { q_blocks: next } });
    // ... and the one started before sees only the old one.
    const done = await waitFor(async () => {
      const st = (await call(trace.baseUrl, 'GET', `/v1/query/${before.body.query_id}`, { token: TOKEN })).body;
      return st.status !== 'running' ? st : undefined;
    }, 'the pinned batch query', 60_000);
    expect(done).toMatchObject({ status: 'succeeded', pinned: { q_blocks: old.dataset_version } });
    const res = await fetch(`${trace.baseUrl}${done.result.url}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const path = join(mkdtempSync(join(tmpdir(), 'trace-query-pin-')), 'r.parquet');
    writeFileSync(path, Buffer.from(await res.arrayBuffer()));
    const duck = await DuckDBInstance.create(':memory:');
    const conn = await duck.connect();
    expect((await conn.runAndReadAll(`SELECT n::INT AS n FROM read_parquet('${path}')`)).getRowObjectsJS()).toEqual([{ n: 1000 }]);
    conn.closeSync();
    duck.closeSync();
    await db.query(`UPDATE dag_dataset_pointers SET dataset_version = $1 WHERE dataset_version = $2`, [old.dataset_version, next]);
    await db.end();
  });
});
