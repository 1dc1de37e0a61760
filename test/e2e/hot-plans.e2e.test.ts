import type { Client } from 'pg';
import type { DataSource } from 'typeorm';
import { createDataSource, parseDatabaseUrl, runMigrationsLocked, TASK_PATH_SETTINGS } from '../../src/common/db';
import { JsonLogger } from '../../src/common/logging/json-logger';
import { attemptSql, TASK_CLAIM_SQL, TASK_FETCH_SQL, TASK_FINISH_SQL } from '../../src/dispatcher/core/attempts.service';
import { EVENT_INGEST_SQL } from '../../src/dispatcher/core/event-ingest';
import { connect, createTestDatabase } from '../support/shared-postgres';

/** Tables that grow with the work: a full scan of one of them per call would not survive production. */
const GROWING = ['tasks', 'task_attempts', 'events', 'dispatch_queue', 'worker_slot_leases', 'datasets', 'dag_dataset_pointers', 'dataset_versions', 'dags', 'dag_versions', 'job_queue_heads'];
/** The task path's own tables, where one job's rows number in the thousands: not even a bitmap of them per call. */
const CHURNING = ['tasks', 'task_attempts', 'events'];

/** Whole-table scans of growing tables, and bitmap scans of churning ones, in a plan. */
const wholeScans = (plan: string) => [
  ...[...plan.matchAll(/Seq Scan on (\w+)/g)].map((m) => m[1]!).filter((t) => GROWING.includes(t)),
  ...[...plan.matchAll(/Bitmap Heap Scan on (\w+)/g)].map((m) => `bitmap ${m[1]!}`).filter((t) => CHURNING.includes(t.slice(7))),
];

/**
 * The task path runs its hot statements as named statements with generic plans, made once per
 * connection and kept until statistics or the schema change — not as the tables grow. A plan
 * that is cheapest on small tables (a sequential scan, hash joins over full scans) then stays for
 * the connection's life and slows every call as the tables grow (docs/benchmarks.md). These
 * statements are written, and their connections and functions set (TASK_PATH_SETTINGS), so that
 * their generic plans are index lookups whatever the tables held when they were made: checked on
 * a freshly migrated, empty database, and again once VACUUM ANALYZE has recorded that its tables
 * are (nearly) empty — as autovacuum does on a new deployment's first few dozen rows.
 */
describe.each([
  ['empty, never analysed', false],
  ['analysed while empty', true],
])('the task path statements: generic plans are index lookups, planned on a database %s', (_name, analysed) => {
  let db: DataSource;
  let session: Client;

  beforeAll(async () => {
    const url = await createTestDatabase('plans');
    db = await createDataSource(parseDatabaseUrl(url), 2).initialize();
    await runMigrationsLocked(db, new JsonLogger('error', () => undefined));
    if (analysed) await db.query('VACUUM ANALYZE');
    session = await connect(url);
  });
  afterAll(async () => {
    await session.end();
    await db.destroy();
  });

  /** The generic plan of `text` in a session with `settings` (as the connection or function that runs it has). */
  const plan = async (text: string, settings: Readonly<Record<string, string>>) => {
    await session.query('RESET ALL');
    for (const [name, value] of Object.entries(settings)) await session.query(`SELECT set_config($1, $2, false)`, [name, value]);
    return (await session.query<{ 'QUERY PLAN': string }>(`EXPLAIN (GENERIC_PLAN) ${text}`)).rows.map((r) => r['QUERY PLAN']).join('\n');
  };
  /** A task path function's RETURN QUERY, its arguments and variables as parameters, and the settings the function carries. */
  const functionQuery = async (name: string, pattern: RegExp, params: Record<string, string>) => {
    const [{ src, config }] = (await session.query<{ src: string; config: string[] | null }>(`SELECT prosrc AS src, proconfig AS config FROM pg_proc WHERE proname = $1`, [name])).rows;
    let query = pattern.exec(src!)![1]!;
    for (const [variable, param] of Object.entries(params)) query = query.replace(new RegExp(`\\b${variable}\\b`, 'g'), param);
    return { query, settings: Object.fromEntries((config ?? []).map((c) => c.split('=') as [string, string])) };
  };
  const expectNoWholeScans = (shown: string) => {
    const scans = wholeScans(shown);
    expect({ scans, plan: scans.length ? shown : '' }).toEqual({ scans: [], plan: '' });
  };

  it('task-claim (trace_claim)', async () => {
    expect(TASK_CLAIM_SQL).toContain('trace_claim(');
    const { query, settings } = await functionQuery('trace_claim', /RETURN QUERY([\s\S]*?);\s*END/, { p_max: '$1::int', p_hashes: '$2::bytea[]', p_node: '$3::uuid' });
    const shown = await plan(query, settings);
    expect(shown).toContain('task_attempts_claimable_idx');
    expectNoWholeScans(shown);
  });

  // The started tasks' entries stay at the front of tasks_queued_order_idx until VACUUM: metering
  // from a completion descends to the job's queue head instead of walking them (migration QueueHeads).
  it('metering (trace_start_tasks) and the completion\'s queued-work probe descend to the queue head', async () => {
    const afterHead = /Index (Only )?Scan using tasks_queued_order_idx[^\n]*\n\s*Index Cond: \(\(dag_id = [^\n]*ROW\(created_at, id\) > ROW\(/;
    const { query, settings } = await functionQuery('trace_start_tasks', /RETURN QUERY\s+(WITH s AS[\s\S]*?);/, {
      p_dag: '$1::uuid', p_job: '$2::text', v_after_at: '$3::timestamptz', v_after_id: '$4::uuid', v_capacity: '$5::int', p_timeout: '$6::int', p_delivery: '$7::text', p_version: '$8::uuid',
    });
    const start = await plan(query, settings);
    expect(start).toMatch(afterHead);
    expectNoWholeScans(start);
    expect(await plan(TASK_FINISH_SQL, TASK_PATH_SETTINGS)).toMatch(afterHead);
  });

  it.each([
    ['task-fetch', TASK_FETCH_SQL],
    ['task-complete', TASK_FINISH_SQL],
    ['events', EVENT_INGEST_SQL],
    ['attempt token lookup', attemptSql(true)],
  ])('%s', async (_name, text) => {
    expectNoWholeScans(await plan(text, TASK_PATH_SETTINGS));
  });
});
