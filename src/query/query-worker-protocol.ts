/**
 * The messages between the Query Service and its worker processes (`query-worker.ts`), over the
 * IPC channel of `child_process.fork` with `serialization: 'advanced'` (so `bigint` and bytes pass
 * as they are). One request at a time per worker, answered by one reply with the same `id`; an
 * `interrupt` may arrive while a `run` is in progress. docs/architecture/query_service.md#how-a-query-runs.
 */

/** DuckDB column types a pinned Postgres dataset is copied into. */
export type CopiedColumnType = 'BIGINT' | 'HUGEINT' | 'DOUBLE' | 'BOOLEAN' | 'BLOB' | 'VARCHAR';

/**
 * What a dataset's view is made of: the pinned version's Parquet files, or its Postgres table's
 * rows, already read — one array per column, the values as the Postgres driver gave them (the
 * worker converts them, so the serving process does no per-value work).
 */
export type DatasetSource =
  | { name: string; kind: 'parquet'; files: string[] }
  | { name: string; kind: 'rows'; columns: { name: string; type: CopiedColumnType; values: unknown[] }[]; rowCount: number };

/** Everything a worker needs to run one query; it reaches nothing else (no database, no object store). */
export interface RunSpec {
  sql: string;
  params: unknown[];
  threads: number;
  /** DuckDB's `memory_limit`, as configured (`512MB`). */
  memoryLimit: string;
  /** The query's own directory: DuckDB spills there, a batch result is written there. */
  scratch: string;
  /** Directories DuckDB may read besides the scratch directory (the pinned versions', local store). */
  readDirs: string[];
  datasets: DatasetSource[];
  output: { kind: 'rows'; maxRows: number; maxBytes: number } | { kind: 'parquet'; path: string };
}

export type WorkerRequest = { kind: 'gate'; id: number; sql: string } | { kind: 'run'; id: number; spec: RunSpec } | { kind: 'interrupt'; id: number };

/** An interactive result: the columns, and the rows already as JSON text (the serving process never parses them). */
export interface RowsResult {
  columns: { name: string; type: string }[];
  rowsJson: string;
  rowCount: number;
  truncated: boolean;
}

export type WorkerFailure =
  | { reason: 'refused'; code: string; message: string }
  | { reason: 'interrupted' }
  | { reason: 'memory'; message: string }
  | { reason: 'result_too_large' }
  | { reason: 'failed'; message: string };

export type WorkerReply =
  | { kind: 'ready'; vmSize: number }
  | { kind: 'done'; id: number; vmSize: number; value: string[] | RowsResult | { rowCount: number } }
  | { kind: 'failed'; id: number; vmSize: number; failure: WorkerFailure };

/** This process's virtual size (`VmSize` in /proc/self/status), in bytes: what RLIMIT_AS counts. */
export function vmSizeOf(status: string): number {
  const kb = /^VmSize:\s+(\d+)\s+kB$/m.exec(status);
  if (!kb) throw new Error('no VmSize in /proc/<pid>/status');
  return Number(kb[1]) * 1024;
}
