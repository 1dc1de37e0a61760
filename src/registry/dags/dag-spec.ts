/**
 * The DAG spec, after parsing and validation. docs/capabilities/dag_configuration.md documents
 * every field; docs/architecture/dag_deployment.md says which fields affect materialization.
 */

export const BUILTIN_OPERATORS = ['cryo_ingest', 'range_aggregator', 'range_splitter', 'sql', 'alert_route'] as const;
/** `user` means operator code the DAG brings, with `language` and `entry_point`. */
export const OPERATORS = [...BUILTIN_OPERATORS, 'user'] as const;
export const RUNTIMES = ['ecs', 'lambda'] as const;
export const LANGUAGES = ['typescript', 'javascript', 'python', 'rust'] as const;
export const BACKENDS = ['postgres', 's3'] as const;
export const UPDATE_STRATEGIES = ['replace', 'append'] as const;
export const PARTITIONINGS = ['none', 'range', 'key'] as const;

export type Operator = (typeof OPERATORS)[number];
export type Runtime = (typeof RUNTIMES)[number];
export type Language = (typeof LANGUAGES)[number];
export type Backend = (typeof BACKENDS)[number];
export type UpdateStrategy = (typeof UPDATE_STRATEGIES)[number];
export type Partitioning = (typeof PARTITIONINGS)[number];

export const NAME_PATTERN = /^[a-z][a-z0-9_]{0,63}$/;
export const DATASET_NAME_PATTERN = /^[a-z][a-z0-9_]{0,127}$/;
export const SECRET_NAME_PATTERN = /^[a-z][a-z0-9_]{0,127}$/;
export const ENV_NAME_PATTERN = /^[A-Z_][A-Z0-9_]{0,127}$/;
export const COLUMN_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

export const LIMITS = {
  specBytes: 256 * 1024,
  jobs: 200,
  inputsPerJob: 32,
  outputsPerJob: 16,
  workerPools: 32,
  slotsPerPool: 256,
  envPerSlot: 64,
  publish: 512,
  maxConcurrency: 1024,
  maxAttempts: 100,
  timeoutSeconds: 7 * 24 * 3600,
} as const;

export type InputSource = { job: string; output: number } | { dataset: string };

export interface JobInput {
  from: InputSource;
}

/**
 * A job output is its own dataset, or — for a buffered Postgres dataset with several writers in
 * the DAG (e.g. `alert_events`) — `writes_to` another job's buffered output, sharing its dataset.
 */
export type JobOutput = OwnOutput | SharedOutput;

export interface SharedOutput {
  writes_to: { job: string; output: number };
}

export interface OwnOutput {
  writes_to?: undefined;
  backend: Backend;
  update_strategy: UpdateStrategy;
  unique_key?: string[];
  /** The column that orders rows (e.g. `block_number`); range partitions are over it. */
  cursor?: string;
  partitioning: Partitioning;
  partition_key?: string;
  /** Buffered Postgres dataset written through the sink; may have several writers in the DAG. */
  buffered: boolean;
}

export interface JobSpec {
  name: string;
  operator: Operator;
  language?: Language;
  entry_point?: string;
  runtime: Runtime;
  inputs: JobInput[];
  outputs: JobOutput[];
  config: Record<string, unknown>;
  scaling: { max_concurrency: number };
  worker_pool?: string;
  timeout_seconds: number;
  max_attempts: number;
}

export interface WorkerSlot {
  env: Record<string, string>;
  secret_env: Record<string, string>;
}

export interface WorkerPool {
  name: string;
  slots: WorkerSlot[];
}

export interface PublishEntry {
  job: string;
  output_index: number;
  dataset_name: string;
}

export interface DagSpec {
  name: string;
  description?: string;
  worker_pools: WorkerPool[];
  jobs: JobSpec[];
  publish: PublishEntry[];
}

/** Fields whose change alters what a job writes: editing one rebuilds the job and its downstream. */
export const MATERIALIZATION_FIELDS = ['operator', 'language', 'entry_point', 'inputs', 'outputs', 'config'] as const;
/** Fields that change only how and where a job runs: applied without rebuilding data. */
export const EXECUTION_FIELDS = ['runtime', 'scaling', 'worker_pool', 'timeout_seconds', 'max_attempts'] as const;

export const DEFAULTS = { runtime: 'ecs' as Runtime, max_concurrency: 1, timeout_seconds: 900, max_attempts: 3 };

/** One problem in a spec: where (`jobs[2].inputs[0].from.output`) and why. */
export interface SpecViolation {
  path: string;
  reason: string;
  line?: number;
  column?: number;
}

export interface SpecWarning {
  path: string;
  message: string;
}
