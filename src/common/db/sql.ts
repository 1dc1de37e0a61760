import { DataSource, type EntityManager } from 'typeorm';

export type Queryable = DataSource | EntityManager;

/**
 * Runs parameterised SQL and returns its rows. TypeORM's Postgres driver returns
 * `[rows, rowCount]` for UPDATE and DELETE but plain rows otherwise; this evens that out.
 */
export async function sql<T>(db: Queryable, text: string, params: unknown[] = []): Promise<T[]> {
  const result: unknown = await db.query(text, params);
  if (Array.isArray(result) && result.length === 2 && Array.isArray(result[0]) && typeof result[1] === 'number') {
    return result[0] as T[];
  }
  return result as T[];
}

/** The first row, or undefined. */
export async function sqlOne<T>(db: Queryable, text: string, params: unknown[] = []): Promise<T | undefined> {
  return (await sql<T>(db, text, params))[0];
}

interface PgQueryable {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[] }>;
}

/**
 * How the connections that run the task path's named statements plan (see prepared). Generic
 * plans are made once per connection and kept until a catalog or statistics change invalidates
 * them, not as the tables grow: a plan made while the task path's tables were small — on an empty
 * database, or just after (auto)vacuum analysed a few dozen rows — scanned them whole, and kept
 * doing so on every call as they grew to millions of rows. The task path looks rows up by key and
 * its tables only grow, so on these connections Postgres never plans a sequential scan where an
 * index can serve. The task path's functions (trace_claim, trace_start_tasks, trace_meter_jobs)
 * carry the same setting themselves (migration 1764190000000-QueueHeads).
 * test/e2e/hot-plans.e2e.test.ts checks the plans made so, on an empty and on an analysed database.
 */
export const TASK_PATH_SETTINGS: Readonly<Record<string, string>> = { plan_cache_mode: 'force_generic_plan', enable_seqscan: 'off' };

export type TaskPathPool = PgQueryable;

const taskPathPools = new WeakMap<DataSource, TaskPathPool>();

/** Named statements run with `db` outside a transaction go to `pool`, a pool with TASK_PATH_SETTINGS. */
export function useTaskPathPool(db: DataSource, pool: TaskPathPool): void {
  taskPathPools.set(db, pool);
}

/** The pool the task path's named statements run on with `db`: its own, or the DataSource's. */
export function taskPathPool(db: DataSource): TaskPathPool | undefined {
  return taskPathPools.get(db) ?? (db.driver as unknown as { master?: TaskPathPool }).master;
}

/**
 * A named (server-side prepared) statement for the task path's hot statements: Postgres parses
 * and plans it once per connection instead of on every call — for the task path's larger
 * statements planning cost more than executing (docs/benchmarks.md). Runs on the transaction's
 * connection inside a transaction, otherwise on the task path's pool (TASK_PATH_SETTINGS) when
 * the database module made one, else on the DataSource's pool.
 */
export async function prepared<T>(db: Queryable, name: string, text: string, params: unknown[] = []): Promise<T[]> {
  const client: PgQueryable | undefined =
    db instanceof DataSource ? taskPathPool(db) : (db.queryRunner as unknown as { databaseConnection?: PgQueryable } | undefined)?.databaseConnection;
  if (!client) return sql<T>(db, text, params);
  const result = await client.query({ name, text, values: params });
  return result.rows as T[];
}
