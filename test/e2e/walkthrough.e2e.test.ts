import { readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { generateTraffic, startAnvil, TRANSFER_TOPIC, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { runSource } from '../support/dags';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_walkthrough-test-dev-token-00000';

/**
 * The README walkthrough: seeds/chain/traffic.mjs makes ERC-20 traffic on anvil, and
 * seeds/dags/local_erc20.yaml ingests it, compacts it into manifests, decodes the transfers with
 * SQL and appends per-block totals to a Postgres-backed dataset — which must agree with the chain.
 * The seed is used as written except its RPC URL and its sizes, scaled down tenfold (100-block
 * files, 1,000-block manifests): anvil takes minutes to mine 10,000 blocks, seconds for 1,000.
 */
describe('the walkthrough: anvil ERC-20 → cryo_ingest → range_aggregator → sql → published', () => {
  let anvil: Anvil;
  let trace: TraceProcess;
  let databaseUrl: string;

  beforeAll(async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, 1_000, 60);
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-walkthrough-'));
    await chmod(dataDir, 0o755);
    databaseUrl = await createTestDatabase('walkthrough');
    trace = await startTrace({
      args: ['--role', 'all'],
      env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100' },
    });
  }, 120_000);
  afterAll(async () => {
    expect(await trace?.stop()).toBe(0);
    await anvil?.stop();
  });

  it('runs the seed DAG end to end and its published totals equal the chain', async () => {
    const written = readFileSync(join(__dirname, '..', '..', 'seeds', 'dags', 'local_erc20.yaml'), 'utf8');
    const seed = written.replace('http://127.0.0.1:8545', anvil.url).replace('chunk_size: 1000', 'chunk_size: 100').replace('range_size: 10000', 'range_size: 1000');
    expect(seed).not.toBe(written.replace('http://127.0.0.1:8545', anvil.url)); // the sizes were found and scaled
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, seed)).status).toBe(201);
    const api = (method: string, path: string) => call(trace.baseUrl, method, path, { token: TOKEN });
    await runSource(trace.baseUrl, TOKEN, 'local_erc20', 'ingest', 180_000);
    const tasks = await waitFor(async () => {
      const all = (await api('GET', '/v1/tasks?dag=local_erc20&limit=1000')).body as { job: string; status: string; error: string | null }[];
      const done = all.every((x) => ['succeeded', 'failed', 'canceled'].includes(x.status));
      return done && (all.some((x) => x.job === 'transfers_per_block') || all.some((x) => x.status !== 'succeeded')) ? all : undefined;
    }, 'the DAG to settle', 180_000);
    expect(tasks.filter((x) => x.status !== 'succeeded').map((x) => `${x.job}: ${x.error}`)).toEqual([]);
    const count = (job: string) => tasks.filter((x) => x.job === job && x.status === 'succeeded').length;
    expect([count('logs_10k'), count('erc20_transfers'), count('transfers_per_block')]).toEqual([10, 1, 1]);

    const published = ((await api('GET', '/v1/datasets')).body as { dataset_name: string }[]).map((d) => d.dataset_name).sort();
    expect(published).toEqual(['local_blocks', 'local_erc20_transfers', 'local_logs', 'local_transactions', 'local_transfers_per_block']);
    const table = (await api('GET', '/v1/datasets/local_transfers_per_block')).body.versions.find((v: { current: boolean }) => v.current).location;
    const db = new Client({ connectionString: databaseUrl });
    await db.connect();
    const { rows } = await db.query(`SELECT sum(transfers)::int AS transfers, sum(amount)::text AS amount FROM ${table}`);
    await db.end();
    const logs = await anvil.rpc<{ data: string }[]>('eth_getLogs', [{ fromBlock: '0x0', toBlock: '0x3e7', topics: [TRANSFER_TOPIC] }]);
    expect(rows[0]).toEqual({ transfers: logs.length, amount: logs.reduce((s, l) => s + BigInt(l.data), 0n).toString() });
  }, 300_000);
});
