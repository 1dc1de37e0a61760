import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTraffic, startAnvil, type Anvil } from '../support/anvil';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { taskFinished } from '../support/tasks';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_cryo-crash-test-dev-token-000000';
const OUT = '{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}';
const dag = (name: string, rpcUrl: string, rps: number) => `name: ${name}
jobs:
  - name: ingest
    operator: cryo_ingest
    max_attempts: 3
    config: {datatypes: [blocks, transactions, logs], chunk_size: 250, start_block: 0, end_block: 1499, confirmations: 0, batch_size: 25, requests_per_second: ${rps}, rpc_url: "${rpcUrl}"}
    outputs: [${OUT}, ${OUT}, ${OUT}]
  - name: agg
    operator: range_aggregator
    inputs: [{from: {job: ingest, output: 1}}]
    config: {range_size: 750, compact: true}
    outputs: [${OUT}]
publish:
  - {job: ingest, output_index: 0, dataset_name: ${name}_blocks}
  - {job: ingest, output_index: 1, dataset_name: ${name}_transactions}
  - {job: ingest, output_index: 2, dataset_name: ${name}_logs}
  - {job: agg, output_index: 0, dataset_name: ${name}_agg}
`;

/**
 * The wrapper running cryo_ingest is killed with SIGKILL in the middle of the run; another wrapper
 * retries it. The files and manifests must equal an uninterrupted run's, with no range missing and
 * no event twice.
 */
describe('cryo_ingest: a wrapper killed mid-write', () => {
  let anvil: Anvil;
  const procs: TraceProcess[] = [];
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await anvil?.stop();
  });

  it('is retried, and leaves the same files and manifests as an uninterrupted run', async () => {
    anvil = await startAnvil();
    await generateTraffic(anvil, 1500, 60);
    const dataDir = mkdtempSync(join(tmpdir(), 'trace-cryo-crash-'));
    await chmod(dataDir, 0o755);
    const objects = join(dataDir, 'objects');
    const databaseUrl = await createTestDatabase('cryocrash');
    const dispatcher = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: databaseUrl, TRACE_DATA_DIR: dataDir, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_NODE_EXPIRY_MS: '2000', TRACE_REAPER_INTERVAL_MS: '200', TRACE_DISPATCH_POLL_MS: '100' },
    });
    procs.push(dispatcher);
    const url = dispatcher.baseUrl;
    const api = (method: string, path: string) => call(url, method, path, { token: TOKEN });
    const wrapperEnv = {
      DATABASE_URL: databaseUrl,
      TRACE_DISPATCHER_URL: url,
      TRACE_INTERNAL_TOKEN: readFileSync(join(dataDir, 'internal-token'), 'utf8').trim(),
      TRACE_OBJECT_STORE_DIR: objects,
      TRACE_DISPATCH_POLL_MS: '100',
      TRACE_HEARTBEAT_INTERVAL_MS: '500',
      TRACE_NODE_EXPIRY_MS: '2000',
    };
    const digest = async (name: string) => {
      const d = (await api('GET', `/v1/datasets/${name}`)).body;
      const dir = join(objects, d.versions.find((v: { current: boolean }) => v.current).location);
      return existsSync(dir) ? Object.fromEntries(readdirSync(dir).map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')])) : {};
    };
    const settled = (name: string) =>
      waitFor(async () => {
        const all = (await api('GET', `/v1/tasks?dag=${name}&limit=1000`)).body as { status: string }[];
        return all.length > 1 && all.every((t) => ['succeeded', 'failed', 'canceled'].includes(t.status)) ? all : undefined;
      }, `${name} to settle`, 120_000);

    // The interrupted run: paced to ~10 requests/s so it is still writing when its wrapper dies.
    expect((await postYaml(url, '/v1/dags', TOKEN, dag('crashed', anvil.url, 10))).status).toBe(201);
    const first = await startTrace({ args: ['--role', 'wrapper'], env: wrapperEnv });
    procs.push(first);
    const id = (await api('POST', '/v1/dags/crashed/jobs/ingest/runs')).body.task_id as string;
    await waitFor(async () => ((await api('GET', `/v1/tasks/${id}`)).body.events.length >= 6 ? true : undefined), 'two ranges written', 60_000);
    first.child.kill('SIGKILL');
    await first.exited;
    const second = await startTrace({ args: ['--role', 'wrapper'], env: wrapperEnv });
    procs.push(second);
    const done = await taskFinished(url, TOKEN, id, 120_000);
    if (done.status !== 'succeeded') throw new Error(`ingest ${done.status}: ${JSON.stringify(done.attempts)}`);
    expect(done.attempts.map((a: { outcome: string }) => a.outcome)).toEqual(['timed_out', 'succeeded']);
    // Every range announced exactly once per output: 6 ranges × 3 outputs, no duplicate keys.
    const announced = done.events.map((e: { dataset_uuid: string; start: string; end: string; kind: string }) => `${e.dataset_uuid}/${e.kind}/${e.start}_${e.end}`);
    expect(announced).toHaveLength(18);
    expect(new Set(announced).size).toBe(18);
    await settled('crashed');

    // The same run, uninterrupted, in another DAG.
    expect((await postYaml(url, '/v1/dags', TOKEN, dag('clean', anvil.url, 0))).status).toBe(201);
    const clean = (await api('POST', '/v1/dags/clean/jobs/ingest/runs')).body.task_id as string;
    expect((await taskFinished(url, TOKEN, clean, 120_000)).status).toBe('succeeded');
    await settled('clean');

    for (const d of ['blocks', 'transactions', 'logs', 'agg']) {
      const [crashed, uninterrupted] = [await digest(`crashed_${d}`), await digest(`clean_${d}`)];
      expect(Object.keys(crashed).sort()).toEqual(Object.keys(uninterrupted).sort());
      expect(crashed).toEqual(uninterrupted);
    }
    expect(Object.keys(await digest('crashed_agg')).sort()).toEqual(['0_749.parquet', '750_1499.parquet']);
    const manifests = (await Promise.all(((await api('GET', '/v1/tasks?dag=crashed&job=agg&limit=1000')).body as { id: string }[]).map(async (t) => (await api('GET', `/v1/tasks/${t.id}`)).body.events))).flat();
    expect(manifests.filter((e: { kind: string }) => e.kind === 'data')).toHaveLength(2);
  }, 300_000);
});
