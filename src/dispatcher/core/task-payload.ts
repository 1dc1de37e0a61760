/** Items per batch call of /internal/* (task-fetch-batch, task-complete-batch): enough to amortise a round trip, small enough to keep a transaction short. */
export const INTERNAL_BATCH_MAX = 100;

/**
 * What a wrapper gets from GET /internal/task-fetch, and what a Lambda is invoked with: the same
 * shape (ADR 0011). Everything the operator needs, nothing it must not have (no platform credentials).
 */
export interface TaskPayload {
  status: 'Ready' | 'Canceled';
  task_id: string;
  attempt: number;
  /** Scoped to this task attempt; the only credential the wrapper uses for events and completion. */
  attempt_token: string;
  deadline_at: string;
  org_id: string;
  dag: { name: string; version: number };
  job: {
    name: string;
    operator: string;
    language?: string;
    entry_point?: string;
    runtime: 'ecs' | 'lambda';
    config: Record<string, unknown>;
  };
  /** The event this task consumes; null for a source run (a trigger). */
  input: null | {
    input_index: number;
    event: EventRef;
  };
  outputs: OutputRef[];
  idempotency: {
    /** Events this task emits are deduplicated by (producer_task_id, dataset_uuid, kind, scope): a retry re-emits safely. */
    producer_task_id: string;
    attempt: number;
  };
  /** The leased worker-pool slot: its env, and its secret_env with values resolved (wrapper only). */
  slot: null | { pool: string; index: number; env: Record<string, string>; secret_env: Record<string, string> };
}

export interface EventRef {
  id: string;
  dataset_uuid: string;
  dataset_version: string;
  location: string;
  kind: 'data' | 'invalidation';
  partition_key: string | null;
  start: string | null;
  end: string | null;
  cursor: string | null;
  payload: Record<string, unknown>;
}

export interface OutputRef {
  index: number;
  dataset_uuid: string;
  dataset_version: string | null;
  location: string | null;
  backend: 'postgres' | 's3';
  update_strategy: 'replace' | 'append';
  unique_key: string[] | null;
  /** The output's cursor column (e.g. block_number): what places a row in a range. */
  cursor: string | null;
}

/** An event as an operator emits it: which output, and the scope it covers. */
export interface EmittedEvent {
  output: number;
  kind: 'data' | 'invalidation';
  start?: number | string;
  end?: number | string;
  partition_key?: string;
  cursor?: string;
  payload?: Record<string, unknown>;
}
