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
 * A named (server-side prepared) statement for the task path's hot statements: Postgres parses
 * and plans it once per connection instead of on every call — for the task path's larger
 * statements planning cost more than executing (docs/benchmarks.md). Runs on the transaction's
 * connection inside a transaction, on the pool otherwise.
 */
export async function prepared<T>(db: Queryable, name: string, text: string, params: unknown[] = []): Promise<T[]> {
  const client = (
    db instanceof DataSource
      ? (db.driver as unknown as { master: PgQueryable }).master
      : (db.queryRunner as unknown as { databaseConnection?: PgQueryable } | undefined)?.databaseConnection
  );
  if (!client) return sql<T>(db, text, params);
  const result = await client.query({ name, text, values: params });
  return result.rows as T[];
}
