import type { ObjectStore } from '../common/storage';
import type { PostgresDatasetWriter } from './tables/postgres-dataset-writer';
import type { EmittedEvent, TaskPayload } from '../dispatcher/core/task-payload';

/**
 * What a built-in operator gets. Built-in operators are trusted platform code: they run inside
 * the wrapper, with the object store, but still report only through the attempt's own calls.
 */
export interface OperatorContext {
  readonly payload: TaskPayload;
  readonly store: ObjectStore;
  /** Writes Postgres-backed dataset versions (tables per dataset_uuid + dataset_version). */
  readonly tables?: PostgresDatasetWriter;
  /** A directory of this attempt's own, removed when the operator returns. */
  readonly scratchDir: string;
  /** The leased pool slot's env with its secret_env values (empty without a pool). */
  readonly env: Readonly<Record<string, string>>;
  /** Relays events now; resolves once the dispatcher accepted them (a refusal throws). */
  emit(events: EmittedEvent[]): Promise<void>;
  /**
   * The job's durable state for the dataset of its input event. `write` is a compare-and-set on
   * the version `read` returned (0: none yet); it throws a StateConflict when another task wrote first.
   */
  readonly state: {
    read<T>(): Promise<{ state: T | null; version: number }>;
    write(expectedVersion: number, state: unknown): Promise<{ version: number }>;
  };
  /**
   * The dataset version locations this attempt may read besides its input event's own (the
   * event's dataset and, through pass-through built-ins, the datasets its files come from), from
   * the dispatcher's records. Asked only when an input key is not under `event.location`
   * (src/operators/input-files.ts).
   */
  readableLocations(): Promise<string[]>;
  /** Aborted when the attempt is canceled or superseded: stop promptly. */
  readonly signal: AbortSignal;
  log(message: string, fields?: Record<string, unknown>): void;
}

export type BuiltinOperator = (ctx: OperatorContext) => Promise<void>;

/** A config error found while running: the task fails with this message, naming the field. */
export class OperatorConfigError extends Error {
  constructor(field: string, reason: string) {
    super(`config.${field}: ${reason}`);
    this.name = 'OperatorConfigError';
  }
}

/** The object key of a block-range file under an output (or input) location: `{location}{start}_{end}.parquet`. */
export function rangeKey(location: string, start: number | string, end: number | string): string {
  return `${location}${start}_${end}.parquet`;
}

/** Parses a range key's file name back into its bounds; undefined for anything else. */
export function parseRangeKey(key: string): { start: number; end: number } | undefined {
  const m = /\/(\d+)_(\d+)\.parquet$/.exec(key);
  return m ? { start: Number(m[1]), end: Number(m[2]) } : undefined;
}
