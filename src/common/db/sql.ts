import type { DataSource, EntityManager } from 'typeorm';

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
