/**
 * A Query Service worker process: all of DuckDB's work on user SQL happens here, never in the
 * serving process (docs/architecture/query_service.md#how-a-query-runs). Started by
 * `QueryWorkerPool` with `child_process.fork`; the pool caps this process's address space
 * (RLIMIT_AS) once it reports ready, so a query that allocates past DuckDB's own `memory_limit`
 * fails here, with DuckDB's `Out of Memory Error`, instead of growing the server.
 *
 * It reads no environment, no database and no object store: each request carries what it needs.
 * When the IPC channel closes (the pool stopped it, or the serving process died) it exits at once.
 */
import { DuckDBConnection, DuckDBInstance, JSDuckDBValueConverter } from '@duckdb/node-api';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DatasetSource, RowsResult, RunSpec, WorkerFailure, WorkerReply, WorkerRequest } from './query-worker-protocol';
import { vmSizeOf } from './query-worker-protocol';
import { gateSql, SqlRefusal } from './sql-gate';

/** SQL string literal. */
const literal = (s: string) => `'${s.replace(/'/g, "''")}'`;
const identifier = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** The user's SELECT, ready to be wrapped: no trailing `;`, and a newline so a trailing `--` comment cannot swallow the wrapper. */
const statementOf = (sql: string) => `${sql.trim().replace(/;(\s*--[^\n]*)*\s*$/, '')}\n`;

/** A JSON-safe cell: big integers as strings when they would lose precision, bytes as 0x hex. */
function cell(v: unknown): unknown {
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return `0x${Buffer.from(v).toString('hex')}`;
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(cell);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, cell(x)]));
  return v;
}

const vmSize = () => vmSizeOf(readFileSync('/proc/self/status', 'utf8'));
const reply = (message: WorkerReply) => process.send!(message);

class ResultTooLarge extends Error {}

/** DuckDB's error → what the service answers. Its messages name no server path we did not give it; the service scrubs those. */
function failureOf(err: unknown): WorkerFailure {
  if (err instanceof SqlRefusal) return { reason: 'refused', code: err.code, message: err.message };
  if (err instanceof ResultTooLarge) return { reason: 'result_too_large' };
  const message = err instanceof Error ? err.message : String(err);
  const first = message.split('\n')[0]!.slice(0, 2000);
  if (/^INTERRUPT Error/i.test(first)) return { reason: 'interrupted' };
  if (/^Out of Memory Error/i.test(first) || err instanceof RangeError) return { reason: 'memory', message: first };
  return { reason: 'failed', message: first };
}

/** A fresh in-memory DuckDB for one query, locked as docs/standards/security_model.md#query-service-hardening says. */
async function openDuckDb(threads: number, memoryLimit: string, tempDirectory?: string): Promise<{ conn: DuckDBConnection; close(): void }> {
  const instance = await DuckDBInstance.create(':memory:', {
    threads: String(threads),
    memory_limit: memoryLimit,
    autoload_known_extensions: 'false',
    autoinstall_known_extensions: 'false',
    allow_community_extensions: 'false',
    ...(tempDirectory ? { temp_directory: tempDirectory } : {}),
  });
  const conn = await instance.connect();
  return {
    conn,
    close: () => {
      conn.closeSync();
      instance.closeSync();
    },
  };
}

/** One view per dataset, named after it, over the pinned version only. */
async function attach(conn: DuckDBConnection, d: DatasetSource): Promise<void> {
  if (d.kind === 'parquet') {
    await conn.run(`CREATE VIEW ${identifier(d.name)} AS SELECT * FROM read_parquet([${d.files.map(literal).join(', ')}])`);
    return;
  }
  await conn.run(`CREATE TABLE ${identifier(d.name)} (${d.columns.map((c) => `${identifier(c.name)} ${c.type}`).join(', ')})`);
  if (d.rowCount === 0) return;
  const appender = await conn.createAppender(d.name);
  for (let r = 0; r < d.rowCount; r++) {
    for (const c of d.columns) {
      const v = c.values[r];
      if (v === null || v === undefined) appender.appendNull();
      else if (c.type === 'BIGINT') appender.appendBigInt(BigInt(v as string | number));
      else if (c.type === 'HUGEINT') appender.appendHugeInt(BigInt(String(v).split('.')[0]!));
      else if (c.type === 'DOUBLE') appender.appendDouble(Number(v));
      else if (c.type === 'BOOLEAN') appender.appendBoolean(Boolean(v));
      else if (c.type === 'BLOB') appender.appendBlob(v as Uint8Array);
      else appender.appendVarchar(v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v));
    }
    appender.endRow();
  }
  appender.closeSync();
}

/** At most maxRows rows as JSON text, refused past maxBytes: what crosses back to the serving process is bounded. */
async function readRows(conn: DuckDBConnection, spec: RunSpec, maxRows: number, maxBytes: number): Promise<RowsResult> {
  const result = await conn.run(`SELECT * FROM (${statementOf(spec.sql)}) AS q LIMIT ${maxRows + 1}`, spec.params as never);
  const types = result.columnTypes();
  const columns = result.columnNames().map((name, i) => ({ name, type: types[i]!.toString() }));
  const parts: string[] = [];
  let bytes = 2;
  let truncated = false;
  chunks: for (let c = 0; c < result.chunkCount; c++) {
    for (const row of result.getChunk(c).convertRows(JSDuckDBValueConverter)) {
      if (parts.length === maxRows) {
        truncated = true;
        break chunks;
      }
      const text = JSON.stringify(row.map(cell));
      bytes += Buffer.byteLength(text) + 1;
      if (bytes > maxBytes) throw new ResultTooLarge();
      parts.push(text);
    }
  }
  return { columns, rowsJson: `[${parts.join(',')}]`, rowCount: parts.length, truncated };
}

let parser: DuckDBConnection;
/** The query in progress; `interrupted` also covers an interrupt that arrives between two of its statements. */
let running: { id: number; conn?: DuckDBConnection; interrupted: boolean } | undefined;

class Interrupted extends Error {
  constructor() {
    super('INTERRUPT Error: Interrupted!');
  }
}
const checkInterrupted = () => {
  if (running?.interrupted) throw new Interrupted();
};

async function run(id: number, spec: RunSpec): Promise<RowsResult | { rowCount: number }> {
  running = { id, interrupted: false };
  let db: { conn: DuckDBConnection; close(): void } | undefined;
  try {
    db = await openDuckDb(spec.threads, spec.memoryLimit, join(spec.scratch, 'spill'));
    const { conn } = db;
    running.conn = conn;
    await conn.run(`SET allowed_directories = [${[spec.scratch, ...spec.readDirs].map((d) => literal(d.endsWith('/') ? d : `${d}/`)).join(', ')}]`);
    await conn.run('SET enable_external_access = false');
    for (const d of spec.datasets) {
      checkInterrupted();
      await attach(conn, d);
    }
    await conn.run('SET lock_configuration = true');
    checkInterrupted();
    if (spec.output.kind === 'rows') return await readRows(conn, spec, spec.output.maxRows, spec.output.maxBytes);
    const written = await conn.runAndReadAll(`COPY (${statementOf(spec.sql)}) TO ${literal(spec.output.path)} (FORMAT parquet, COMPRESSION zstd)`, spec.params as never);
    return { rowCount: Number(written.getRowsJS()[0]?.[0] ?? 0) };
  } finally {
    running = undefined;
    db?.close();
  }
}

async function handle(request: WorkerRequest): Promise<void> {
  if (request.kind === 'interrupt') {
    if (running?.id !== request.id) return;
    running.interrupted = true;
    running.conn?.interrupt();
    return;
  }
  try {
    const value = request.kind === 'gate' ? await gateSql(parser, request.sql) : await run(request.id, request.spec);
    reply({ kind: 'done', id: request.id, vmSize: vmSize(), value });
  } catch (err) {
    reply({ kind: 'failed', id: request.id, vmSize: vmSize(), failure: failureOf(err) });
  }
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('query-worker runs only as a child process started by the Query Service');
  // The serving process stopped us, or died: nothing here outlives it, and nothing needs saving.
  process.on('disconnect', () => process.kill(process.pid, 'SIGKILL'));
  const threads = Number(/^--threads=(\d+)$/.exec(process.argv[2] ?? '')?.[1] ?? 1);

  // The parser for the gate: it only parses (json_serialize_sql), and is locked all the same.
  const gate = await openDuckDb(1, '64MB');
  parser = gate.conn;
  await parser.run('SET enable_external_access = false');
  await parser.run('SET lock_configuration = true');
  // One query's worth of DuckDB, once: its threads and allocator arenas are then part of the size
  // at rest the pool caps this process's address space above.
  const warm = await openDuckDb(threads, '64MB');
  await warm.conn.run('SELECT sum(i) FROM range(100000) t(i)');
  warm.close();

  process.on('message', (request: WorkerRequest) => void handle(request));
  reply({ kind: 'ready', vmSize: vmSize() });
}

void main();
