import type { DataSource } from 'typeorm';
import { createDataSource, parseDatabaseUrl, runMigrationsLocked } from '../../src/common/db';
import { JsonLogger } from '../../src/common/logging/json-logger';
import { attemptSql, TASK_CLAIM_SQL, TASK_FETCH_SQL, TASK_FINISH_SQL } from '../../src/dispatcher/core/attempts.service';
import { EVENT_INGEST_SQL } from '../../src/dispatcher/core/event-ingest';
import { createTestDatabase } from '../support/shared-postgres';

/** Tables that grow with the work: a full scan of one of them per call would not survive production. */
const GROWING = ['tasks', 'task_attempts', 'events', 'dispatch_queue', 'worker_slot_leases', 'datasets', 'dag_dataset_pointers', 'dataset_versions', 'dags', 'dag_versions'];
/** The task path's own tables, where one job's rows number in the thousands: not even a bitmap of them per call. */
const CHURNING = ['tasks', 'task_attempts', 'events'];

/** Whole-table scans of growing tables, and bitmap scans of churning ones, in a plan. */
const wholeScans = (plan: string) => [
  ...[...plan.matchAll(/Seq Scan on (\w+)/g)].map((m) => m[1]!).filter((t) => GROWING.includes(t)),
  ...[...plan.matchAll(/Bitmap Heap Scan on (\w+)/g)].map((m) => `bitmap ${m[1]!}`).filter((t) => CHURNING.includes(t.slice(7))),
];

/**
 * The task path runs its hot statements as named statements with generic plans, made once per
 * connection — usually when the tables are still nearly empty. A plan that is cheapest on empty
 * tables (hash joins over full scans) then stays for the connection's life and slows every call
 * as the tables grow (docs/benchmarks.md). These statements are written so that their generic
 * plans are index lookups whatever the table sizes: checked here on a freshly migrated, empty database.
 */
describe('the task path statements: generic plans are index lookups, even planned on empty tables', () => {
  let db: DataSource;

  beforeAll(async () => {
    db = await createDataSource(parseDatabaseUrl(await createTestDatabase('plans')), 2).initialize();
    await runMigrationsLocked(db, new JsonLogger('error', () => undefined));
  });
  afterAll(async () => {
    await db.destroy();
  });

  const plan = async (text: string) => ((await db.query(`EXPLAIN (GENERIC_PLAN) ${text}`)) as { 'QUERY PLAN': string }[]).map((r) => r['QUERY PLAN']).join('\n');

  /** The query trace_claim runs (task-claim, and the events statement for a waiting claim), with its arguments as parameters. */
  const claimQuery = async () => {
    const [{ src }] = (await db.query(`SELECT prosrc AS src FROM pg_proc WHERE proname = 'trace_claim'`)) as { src: string }[];
    const query = /RETURN QUERY([\s\S]*?);\s*END/.exec(src!)![1]!;
    return query.replace(/\bp_max\b/g, '$1::int').replace(/\bp_hashes\b/g, '$2::bytea[]').replace(/\bp_node\b/g, '$3::uuid');
  };

  it('task-claim (trace_claim)', async () => {
    expect(TASK_CLAIM_SQL).toContain('trace_claim(');
    const shown = await plan(await claimQuery());
    expect(shown).toContain('task_attempts_claimable_idx');
    const scans = wholeScans(shown);
    expect({ scans, plan: scans.length ? shown : '' }).toEqual({ scans: [], plan: '' });
  });

  it.each([
    ['task-fetch', TASK_FETCH_SQL],
    ['task-complete', TASK_FINISH_SQL],
    ['events', EVENT_INGEST_SQL],
    ['attempt token lookup', attemptSql(true)],
  ])('%s', async (_name, text) => {
    const shown = await plan(text);
    const scans = wholeScans(shown);
    expect({ scans, plan: scans.length ? shown : '' }).toEqual({ scans: [], plan: '' });
  });
});
