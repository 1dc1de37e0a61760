import type { DuckDBAppender, DuckDBConnection } from '@duckdb/node-api';
import { lit } from '../duckdb/locked-duckdb';
import { SCHEMAS, type CryoColumn, type CryoValue, type Datatype } from './schemas';

function append(appender: DuckDBAppender, column: CryoColumn, value: CryoValue): void {
  if (value === null) return appender.appendNull();
  switch (column.type) {
    case 'BLOB':
      return appender.appendBlob(value as Uint8Array);
    case 'UINTEGER':
      return appender.appendUInteger(value as number);
    case 'UBIGINT':
      return appender.appendUBigInt(value as bigint);
    case 'VARCHAR':
      return appender.appendVarchar(value as string);
    case 'DOUBLE':
      return appender.appendDouble(value as number);
    case 'BOOLEAN':
      return appender.appendBoolean(value as boolean);
  }
}

let tableSeq = 0;

/**
 * How every Parquet file we write is written. No dictionary pages: DuckDB 1.5.6 drops every row
 * of a dictionary-encoded BLOB column under an equality filter (`WHERE topic0 = from_hex(...)`
 * finds nothing), and hashes and addresses are BLOBs. zstd recovers most of what dictionaries saved.
 */
export const PARQUET_OPTIONS = 'FORMAT parquet, COMPRESSION zstd, DICTIONARY_SIZE_LIMIT 0, ROW_GROUP_SIZE 122880';

/** The Parquet key-value metadata entry that holds the hash of a range's last block. */
export const LAST_BLOCK_HASH_KEY = 'trace_last_block_hash';

/**
 * Writes rows of one cryo datatype to a Parquet file, in cryo's column order and sort order, with
 * the hash of the range's last block in the file's metadata: what a later run compares with the
 * chain to see a reorg, whatever the datatype (a logs-only range has no block rows to read it from).
 * The same rows of the same chain always give the same file: one thread, a fixed sort, fixed settings.
 */
export async function writeCryoParquet(conn: DuckDBConnection, datatype: Datatype, rows: CryoValue[][], path: string, lastBlockHash: string): Promise<void> {
  if (!/^0x[0-9a-f]{64}$/.test(lastBlockHash)) throw new Error(`not a block hash: ${lastBlockHash}`);
  const { columns, sort } = SCHEMAS[datatype];
  const table = `cryo_${datatype}_${tableSeq++}`;
  await conn.run(`CREATE TABLE ${table} (${columns.map((c) => `${c.name} ${c.type}`).join(', ')})`);
  try {
    const appender = await conn.createAppender(table);
    for (const row of rows) {
      columns.forEach((c, i) => append(appender, c, row[i]!));
      appender.endRow();
    }
    appender.closeSync();
    await conn.run(`COPY (SELECT * FROM ${table} ORDER BY ${sort.join(', ')}) TO ${lit(path)} (${PARQUET_OPTIONS}, KV_METADATA {${LAST_BLOCK_HASH_KEY}: ${lit(lastBlockHash)}})`);
  } finally {
    await conn.run(`DROP TABLE ${table}`);
  }
}
