import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { connect, createTestDatabase } from '../support/shared-postgres';
import { dagSettled } from '../support/dags';
import { taskFinished } from '../support/tasks';
import { join } from 'node:path';
import { startTrace, type TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_invalidationorderplatformadmin00';
const CODE_ROOT = join(__dirname, '..', 'fixtures', 'code');
const RUNS = 12;

/**
 * A re-ingested range comes as an invalidation and the new data in one call; their consumer tasks
 * run in either order (here up to four at once). Whatever the order, the aggregator's window ends
 * complete with the newest revision, and its last word on the window is a manifest of it.
 */
describe('an invalidation and the data that replaces it, consumed in either order', () => {
  let trace: TraceProcess;
  let databaseUrl: string;
  afterAll(async () => {
    expect(await trace?.stop()).toBe(0);
  });

  it(`leaves the window complete with the newest revision after each of ${RUNS} re-ingests`, async () => {
    databaseUrl = await createTestDatabase('invorder');
    trace = await startTrace({ env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_CODE_ROOT: CODE_ROOT, TRACE_DISPATCH_POLL_MS: '100' } });
    const url = trace.baseUrl;
    const dag = `name: reorged
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: reorg-source.js
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]
  - name: windows
    operator: range_aggregator
    scaling: {max_concurrency: 4}
    inputs: [{from: {job: source}}]
    config: {range_size: 200}
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]
`;
    expect((await postYaml(url, '/v1/dags', TOKEN, dag)).status).toBe(201);
    const db = await connect(databaseUrl);
    try {
      const broken: string[] = [];
      for (let run = 1; run <= RUNS; run++) {
        const id = (await call(url, 'POST', '/v1/dags/reorged/jobs/source/runs', { token: TOKEN })).body.task_id as string;
        expect((await taskFinished(url, TOKEN, id)).status).toBe('succeeded');
        const tasks = await dagSettled(url, TOKEN, 'reorged', 4 * run);
        expect(tasks.filter((t) => t.status !== 'succeeded')).toEqual([]);
        // The window's state: both parts, range 0..99 at this run's revision, a manifest emitted for them.
        const { rows } = await db.query(
          `SELECT s.state FROM operator_state s JOIN dags g ON g.id = s.dag_id WHERE g.name = 'reorged' AND s.job_name = 'windows'`,
        );
        const win = rows[0].state.windows['0'];
        const parts = (win.parts as { start: number; cursor: string }[]).map((p) => `${p.start}@${p.cursor}`);
        // The aggregator's last event for the window (events are stored in the order they are accepted).
        const { rows: last } = await db.query(
          `SELECT e.kind, e.cursor FROM events e JOIN datasets d ON d.dataset_uuid = e.dataset_uuid JOIN dags g ON g.id = d.dag_id
            WHERE g.name = 'reorged' AND d.job_name = 'windows' ORDER BY e.id DESC LIMIT 1`,
        );
        const ok = parts.join(',') === `0@${id},100@unchanged` && win.emitted && last[0]?.kind === 'data' && last[0]?.cursor === win.emitted.fingerprint;
        if (!ok) broken.push(`run ${run}: parts ${parts.join(',')}, emitted ${JSON.stringify(win.emitted ?? null)}, last event ${JSON.stringify(last[0] ?? null)}`);
      }
      expect(broken).toEqual([]);
    } finally {
      await db.end();
    }
  }, 300_000);
});
