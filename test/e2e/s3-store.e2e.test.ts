import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance } from '@duckdb/node-api';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTraffic, startAnvil, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { jobTasksSucceeded, taskFinished } from '../support/tasks';
import { startTrace, TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_s3-store-test-dev-token-0000000';
const AWS_ENV = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' };
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';

/** The S3 object store, against fauxqs's S3 API on loopback: same keys, same files, read back by the sql operator. */
describe('the S3 object store (against fauxqs on loopback)', () => {
  let fauxqs: { address: string; stop(): Promise<void> };
  let anvil: Anvil;
  let trace: TraceProcess;
  let s3: S3Client;

  beforeAll(async () => {
    const { startFauxqs } = (await import('fauxqs')) as { startFauxqs: (o: object) => Promise<{ address: string; stop(): Promise<void> }> };
    fauxqs = await startFauxqs({ port: 0, host: '127.0.0.1', logger: false });
    s3 = new S3Client({ region: 'us-east-1', endpoint: fauxqs.address, forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
    await s3.send(new CreateBucketCommand({ Bucket: 'trace-datasets' }));
    anvil = await startAnvil();
    await generateTraffic(anvil, 500, 20);
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-s3-'));
    await chmod(dataDir, 0o755);
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { ...AWS_ENV, DATABASE_URL: await createTestDatabase('s3store'), TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100', TRACE_OBJECT_STORE: 's3', TRACE_S3_BUCKET: 'trace-datasets', TRACE_AWS_ENDPOINT: fauxqs.address },
    });
  }, 120_000);
  afterAll(async () => {
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
    await fauxqs?.stop();
  });

  it('cryo_ingest writes its ranges as S3 objects under the uuid/version layout, and sql reads them back', async () => {
    const yaml = `name: s3chain
jobs:
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [logs], chunk_size: 250, start_block: 0, end_block: 499, confirmations: 0, rpc_url: "${anvil.url}"}
    outputs: [${OUT}]
  - name: counts
    operator: sql
    inputs: [{from: {job: ingest, output: 0}}]
    config: {sql: "SELECT count(*) AS logs FROM input_0"}
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: s3_logs}
  - {job: counts, output_index: 0, dataset_name: s3_counts}
`;
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, yaml)).status).toBe(201);
    const run = (await call(trace.baseUrl, 'POST', '/v1/dags/s3chain/jobs/ingest/runs', { token: TOKEN })).body.task_id;
    const t = await taskFinished(trace.baseUrl, TOKEN, run, 60_000);
    if (t.status !== 'succeeded') throw new Error(`ingest ${t.status}: ${JSON.stringify(t.attempts)}`);
    await jobTasksSucceeded(trace.baseUrl, TOKEN, 's3chain', 'counts', 2, 60_000);

    const location = async (name: string) => (await call(trace.baseUrl, 'GET', `/v1/datasets/${name}`, { token: TOKEN })).body.versions.find((v: { current: boolean }) => v.current).location as string;
    const keys = async (prefix: string) => ((await s3.send(new ListObjectsV2Command({ Bucket: 'trace-datasets', Prefix: prefix }))).Contents ?? []).map((o) => o.Key!).sort();
    const logs = await location('s3_logs');
    expect(logs).toMatch(/^org\/[0-9a-f-]{36}\/dataset\/[0-9a-f-]{36}\/version\/[0-9a-f-]{36}\/$/);
    expect(await keys(logs)).toEqual([`${logs}0_249.parquet`, `${logs}250_499.parquet`]);
    const counts = await location('s3_counts');
    expect(await keys(counts)).toEqual([`${counts}0_249.parquet`, `${counts}250_499.parquet`]);

    // What the objects hold: the chain's logs, range by range (read with DuckDB from a downloaded copy).
    const duck = await DuckDBInstance.create(':memory:');
    const conn = await duck.connect();
    const scratch = mkdtempSync(join(tmpdir(), 'trace-s3-read-'));
    for (const [k, [from, to]] of [[0, 249], [250, 499]].entries()) {
      for (const [prefix, sql] of [[logs, 'SELECT count(*)::INT AS n FROM read_parquet(?)'], [counts, 'SELECT logs::INT AS n FROM read_parquet(?)']] as const) {
        const body = await (await s3.send(new GetObjectCommand({ Bucket: 'trace-datasets', Key: `${prefix}${from}_${to}.parquet` }))).Body!.transformToByteArray();
        const path = join(scratch, `${k}-${prefix.length}.parquet`);
        writeFileSync(path, body);
        const [row] = (await conn.runAndReadAll(sql.replace('?', `'${path}'`))).getRowObjectsJS();
        expect(row!.n).toBe((await anvil.rpc<unknown[]>('eth_getLogs', [{ fromBlock: `0x${from!.toString(16)}`, toBlock: `0x${to!.toString(16)}` }])).length);
      }
    }
    conn.closeSync();
    duck.closeSync();
  }, 180_000);
});
