import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { generateTraffic, startAnvil, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { currentLocation, dagSettled, runSource } from '../support/dags';
import { startTrace, type TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_reorgpropertyplatformadmin000000';
const CONFIRMATIONS = 20;
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const SEEDS = (process.env.TRACE_REORG_SEEDS ?? '1,2,3,4').split(',').map(Number);
const STEPS = Number(process.env.TRACE_REORG_STEPS ?? 20);

/** The DAG under test: every kind of output a reorg must leave equal to a fresh ingest. */
const dag = (name: string, rpcUrl: string) => `name: ${name}
jobs:
  - name: ingest
    operator: cryo_ingest
    config: {datatypes: [blocks, logs], chunk_size: 100, start_block: 0, confirmations: ${CONFIRMATIONS}, batch_size: 50, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}, ${OUT}]
  - name: win
    operator: range_aggregator
    inputs: [{from: {job: ingest, output: 1}}]
    config: {range_size: 500}
    outputs: [${OUT}]
  - name: wsql
    operator: sql
    inputs: [{from: {job: win, output: 0}}]
    config: {sql: "SELECT count(*) AS logs, count(DISTINCT block_number) AS blocks FROM input_0"}
    outputs: [${OUT}]
  - name: per_block
    operator: sql
    inputs: [{from: {job: ingest, output: 1}}]
    config: {sql: "SELECT block_number, count(*) AS logs FROM input_0 GROUP BY block_number"}
    outputs: [{backend: postgres, update_strategy: replace, cursor: block_number}]
  - name: appended
    operator: sql
    inputs: [{from: {job: ingest, output: 1}}]
    config: {sql: "SELECT block_number, log_index, hex(data) AS data FROM input_0"}
    outputs: [{backend: postgres, update_strategy: append, unique_key: [block_number, log_index], cursor: block_number}]
publish:
  - {job: ingest, output_index: 0, dataset_name: ${name}_blocks}
  - {job: ingest, output_index: 1, dataset_name: ${name}_logs}
  - {job: wsql, output_index: 0, dataset_name: ${name}_wsql}
  - {job: per_block, output_index: 0, dataset_name: ${name}_per_block}
  - {job: appended, output_index: 0, dataset_name: ${name}_appended}
`;

/** A small seeded generator (mulberry32), so a failing scenario can be replayed from its seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A property of reorg handling, over seeded random chains: after each run of the source settles,
 * every dataset of the DAG — ingest-level Parquet, aggregated windows read by sql, sql outputs on
 * S3 and on Postgres (`replace` and `append`) — equals a fresh deploy that ingests the final chain.
 * Steps: mine blocks with ERC-20-shaped traffic, reorg inside the confirmation window, reorg beyond
 * it onto different transactions (evm_snapshot / evm_revert, then new traffic), reorg onto a
 * shorter chain, and runs of the source. TRACE_REORG_SEEDS and TRACE_REORG_STEPS replay one.
 */
describe('reorgs, as a property: every dataset equals a fresh ingest of the final chain', () => {
  let trace: TraceProcess;
  let dataDir: string;
  let db: Client;
  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'trace-reorg-property-'));
    await chmod(dataDir, 0o755);
    const databaseUrl = await createTestDatabase('reorgprop');
    trace = await startTrace({ env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_DISPATCH_POLL_MS: '100' } });
    db = new Client({ connectionString: databaseUrl });
    await db.connect();
  }, 120_000);
  afterAll(async () => {
    await db?.end();
    expect(await trace?.stop()).toBe(0);
  });

  const api = (method: string, path: string) => call(trace.baseUrl, method, path, { token: TOKEN });
  /** A file dataset's current version, file by file (name → SHA-256). */
  const files = async (name: string) => {
    const d = (await api('GET', `/v1/datasets/${name}`)).body;
    const dir = join(dataDir, 'objects', d.versions.find((v: { current: boolean }) => v.current).location);
    if (!existsSync(dir)) return {};
    return Object.fromEntries(readdirSync(dir).sort().map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')]));
  };
  const rows = async (name: string) => {
    const table = await currentLocation(trace.baseUrl, TOKEN, name);
    const exists = (await db.query(`SELECT to_regclass($1) IS NOT NULL AS e`, [table])).rows[0].e as boolean;
    return exists ? (await db.query(`SELECT * FROM ${table} ORDER BY 1, 2`)).rows : [];
  };
  const snapshotOf = async (name: string) => ({
    blocks: await files(`${name}_blocks`),
    logs: await files(`${name}_logs`),
    wsql: await files(`${name}_wsql`),
    per_block: await rows(`${name}_per_block`),
    appended: await rows(`${name}_appended`),
  });

  /** Which kinds of reorg the seeds produced: all of them must have been exercised. */
  const seen = new Set<string>();
  afterAll(() => {
    if (SEEDS.length > 1) expect([...seen].sort()).toEqual(['deep', 'shallow', 'shorter']);
  });

  it.each(SEEDS)('seed %i', async (seed) => {
    const rnd = random(seed);
    const pick = (n: number) => Math.floor(rnd() * n);
    const anvil: Anvil = await startAnvil();
    try {
      const head = async () => Number.parseInt(await anvil.rpc<string>('eth_blockNumber'), 16);
      const grow = async (blocks: number) => generateTraffic(anvil, (await head()) + blocks + 1, 4 + pick(12));
      const name = `chain_${seed}`;
      await grow(300 + pick(300));
      expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag(name, anvil.url))).status).toBe(201);
      const snapshots: string[] = [];
      const history: string[] = [];
      let fresh = 0;
      const settleAndCompare = async (step: number) => {
        await runSource(trace.baseUrl, TOKEN, name, 'ingest');
        const tasks = await dagSettled(trace.baseUrl, TOKEN, name);
        expect(tasks.filter((t) => t.status !== 'succeeded')).toEqual([]);
        const other = `fresh_${seed}_${fresh++}`;
        expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, dag(other, anvil.url))).status).toBe(201);
        await runSource(trace.baseUrl, TOKEN, other, 'ingest');
        await dagSettled(trace.baseUrl, TOKEN, other);
        const [got, want] = [await snapshotOf(name), await snapshotOf(other)];
        if (JSON.stringify(got) !== JSON.stringify(want)) {
          throw new Error(`seed ${seed}, step ${step}: the DAG differs from a fresh ingest of the final chain after: ${history.join(' → ')}\n` +
            Object.keys(got).filter((k) => JSON.stringify(got[k as keyof typeof got]) !== JSON.stringify(want[k as keyof typeof want])).map((k) => `  ${k}: ${JSON.stringify(got[k as keyof typeof got]).slice(0, 400)}\n  fresh: ${JSON.stringify(want[k as keyof typeof want]).slice(0, 400)}`).join('\n'));
        }
      };
      for (let step = 0; step < STEPS; step++) {
        const roll = pick(10);
        if (roll < 3) {
          const n = 20 + pick(200);
          await grow(n);
          history.push(`mine ${n}`);
        } else if (roll < 4) {
          const depth = 1 + pick(CONFIRMATIONS - 2);
          const accounts = await anvil.rpc<string[]>('eth_accounts');
          await anvil.rpc('anvil_reorg', [depth, [[{ from: accounts[1], to: accounts[2], value: `0x${(1 + pick(1000)).toString(16)}` }, pick(depth)]]]);
          snapshots.length = 0; // anvil drops its snapshots on a reorg
          history.push(`shallow reorg ${depth}`);
          seen.add('shallow');
        } else if (roll < 7 && snapshots.length > 0) {
          // Back to an earlier chain, then different traffic: longer (a deep reorg) or shorter.
          const to = snapshots.splice(pick(snapshots.length))[0]!;
          const before = await head();
          expect(await anvil.rpc<boolean>('evm_revert', [to])).toBe(true);
          const base = await head();
          const shorter = rnd() < 0.5;
          const target = shorter ? pick(Math.max(1, before - base)) : before - base + 30 + pick(150);
          if (target > 0) await grow(target);
          history.push(`${shorter ? 'shorter' : 'deep'} reorg to ${base} (+${target})`);
          seen.add(shorter ? 'shorter' : 'deep');
        } else {
          history.push('run');
          await settleAndCompare(step);
          // Every run's chain can be gone back to: the deep and shorter reorgs start from one.
          snapshots.push(await anvil.rpc<string>('evm_snapshot', []));
        }
      }
      history.push('run');
      await settleAndCompare(STEPS);
      console.log(`seed ${seed}: ${history.join(' → ')}; ${fresh} comparisons, final head ${await head()}`);
    } finally {
      await anvil.stop();
    }
  }, 600_000);
});
