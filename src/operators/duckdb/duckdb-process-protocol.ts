/**
 * The one request and one reply between a built-in operator and its DuckDB process
 * (`duckdb-process.ts` starts it, `duckdb-worker.ts` is it), over the IPC channel with
 * `serialization: 'advanced'` so `bigint` and bytes pass as they are.
 */
export interface DuckDbJob {
  threads: number;
  /** DuckDB's `memory_limit` (`1GB`); the process's address space is capped above it. */
  memoryLimit: string;
  /** The only directory DuckDB may read or write: the attempt's scratch directory. */
  scratchDir: string;
  /** Run first, as the platform (views over the task's own copies of its input files). */
  setup: string[];
  /** The SQL from the DAG (or the platform's own statement): checked to be exactly one SELECT when `userSql`. */
  select: string;
  userSql: boolean;
  /** `copy`: the SELECT's rows into a Parquet file; `rows`: back to the operator. */
  output: { kind: 'copy'; path: string; options: string } | { kind: 'rows'; maxRows: number };
}

export interface DuckDbRows {
  columns: { name: string; type: string }[];
  rows: Record<string, unknown>[];
}

export type DuckDbReply = { kind: 'done'; rows?: DuckDbRows } | { kind: 'failed'; message: string; memory: boolean };
