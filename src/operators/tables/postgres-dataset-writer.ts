import type { DataSource } from 'typeorm';

/** A column as DuckDB describes a query's result. */
export interface ResultColumn {
  name: string;
  type: string;
}

/** DuckDB type → Postgres type for dataset tables. Anything unlisted is stored as text. */
function pgType(duck: string): string {
  const t = duck.toUpperCase();
  if (/^DECIMAL/.test(t)) return t.replace('DECIMAL', 'numeric');
  const map: Record<string, string> = {
    BOOLEAN: 'boolean', TINYINT: 'smallint', SMALLINT: 'smallint', INTEGER: 'integer', BIGINT: 'bigint', HUGEINT: 'numeric',
    UTINYINT: 'smallint', USMALLINT: 'integer', UINTEGER: 'bigint', UBIGINT: 'numeric(20)', UHUGEINT: 'numeric',
    FLOAT: 'real', DOUBLE: 'double precision', VARCHAR: 'text', BLOB: 'bytea', DATE: 'date',
    TIMESTAMP: 'timestamp', 'TIMESTAMP WITH TIME ZONE': 'timestamptz', UUID: 'uuid', JSON: 'jsonb',
  };
  return map[t] ?? 'text';
}

const ident = (name: string) => {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`column "${name}": dataset columns must be lowercase names of letters, digits and _ (at most 63)`);
  return `"${name}"`;
};

/** `"ds_<hex>"."v_<hex>"`, exactly as recorded at deploy; anything else is refused. */
function parseLocation(location: string): { schema: string; table: string } {
  const m = /^"(ds_[0-9a-f]{32})"\."(v_[0-9a-f]{32})"$/.exec(location);
  if (!m) throw new Error(`not a Postgres dataset location: ${location}`);
  return { schema: m[1]!, table: m[2]! };
}

export interface WriteScope {
  strategy: 'replace' | 'append';
  uniqueKey: string[] | null;
  /** replace: the column that places a row in the range, and the range being rewritten. */
  rangeColumn?: string;
  start?: string;
  end?: string;
}

/**
 * Writes rows of a Postgres-backed dataset version (a table per dataset_uuid + dataset_version),
 * in one transaction: `replace` deletes the range and inserts it again; `append` only inserts,
 * and a row whose `unique_key` is already there is dropped (a unique index enforces it).
 */
export class PostgresDatasetWriter {
  constructor(private readonly db: DataSource) {}

  /** Removes a range's rows (by the output's cursor column) from a version's table, if it has one yet. */
  async retract(location: string, rangeColumn: string, start: string | number, end: string | number): Promise<number> {
    const { schema, table } = parseLocation(location);
    const target = `"${schema}"."${table}"`;
    const [found] = (await this.db.query(`SELECT to_regclass($1) IS NOT NULL AS present`, [target])) as { present: boolean }[];
    if (!found?.present) return 0;
    const res = (await this.db.query(`DELETE FROM ${target} WHERE ${ident(rangeColumn)} BETWEEN $1 AND $2`, [start, end])) as [unknown[], number];
    return res[1] ?? 0;
  }

  async write(location: string, columns: ResultColumn[], rows: Record<string, unknown>[], scope: WriteScope): Promise<{ inserted: number; deleted: number }> {
    const { schema, table } = parseLocation(location);
    const target = `"${schema}"."${table}"`;
    const cols = columns.map((c) => ({ name: ident(c.name), type: pgType(c.type) }));
    if (scope.strategy === 'append') {
      if (!scope.uniqueKey?.length) throw new Error('append needs the output\'s unique_key');
      for (const k of scope.uniqueKey) if (!columns.some((c) => c.name === k)) throw new Error(`unique_key column "${k}" is not in the query's result`);
    }
    return this.db.transaction(async (tx) => {
      await tx.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      await tx.query(`CREATE TABLE IF NOT EXISTS ${target} (${cols.map((c) => `${c.name} ${c.type}`).join(', ')})`);
      if (scope.uniqueKey?.length) {
        await tx.query(`CREATE UNIQUE INDEX IF NOT EXISTS "${table}_unique_key" ON ${target} (${scope.uniqueKey.map(ident).join(', ')})`);
      }
      let deleted = 0;
      // A range is rewritten whole when the output has a cursor column: `replace` always (it needs
      // one), `append` too, so a range re-derived after a reorg keeps none of the old chain's rows
      // (ADR 0022). An `append` output without a cursor column only ever inserts.
      if (scope.rangeColumn && scope.start !== undefined && scope.end !== undefined) {
        const res = (await tx.query(`DELETE FROM ${target} WHERE ${ident(scope.rangeColumn)} BETWEEN $1 AND $2`, [scope.start, scope.end])) as [unknown[], number];
        deleted = res[1] ?? 0;
      }
      let inserted = 0;
      const conflict = scope.uniqueKey?.length ? ` ON CONFLICT (${scope.uniqueKey.map(ident).join(', ')}) DO NOTHING` : '';
      for (let i = 0; i < rows.length; i += 500) {
        const batch = rows.slice(i, i + 500);
        // One jsonb parameter per batch, unpacked into typed columns by Postgres.
        const res = (await tx.query(
          `INSERT INTO ${target} (${cols.map((c) => c.name).join(', ')})
           SELECT ${cols.map((c, n) => (c.type === 'bytea' ? `decode(r->>${n}, 'hex')` : `(r->>${n})::${c.type}`)).join(', ')}
             FROM jsonb_array_elements($1::jsonb) AS r${conflict}
           RETURNING 1`,
          [JSON.stringify(batch.map((row) => columns.map((c) => encode(row[c.name]))))],
        )) as unknown[];
        inserted += res.length;
      }
      return { inserted, deleted };
    });
  }
}

function encode(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
