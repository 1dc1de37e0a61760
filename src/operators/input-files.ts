import type { EventRef, OutputRef } from '../dispatcher/core/task-payload';
import { rangeKey, type OperatorContext } from './operator';
import type { ObjectStore } from '../common/storage';

/**
 * Which files a built-in operator may read or pass on. An input event's payload is written by
 * whoever emitted it — user code too — so the keys it names are a claim, never an address:
 * every one must be
 *
 *   1. a dataset file key, `org/{org_id}/dataset/{dataset_uuid}/version/{dataset_version}/{start}_{end}.parquet`,
 *      of the task's own org (no `..`, no absolute path, no query result, nothing else), and
 *   2. under the input event's dataset version location (`event.location`, which the dispatcher
 *      reads from `dataset_versions`, not from the emitter), or under one of the locations the
 *      dispatcher says this attempt may read (`GET /internal/input-locations`: the event's dataset
 *      and, through pass-through built-ins, the datasets their files come from).
 *
 * The dispatcher is asked only when some key is not under `event.location`, so the common case
 * (a range file, a compacted manifest) costs nothing. Anything else fails the task before a byte is read.
 */

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const BOUND = '-?[0-9]{1,19}';
const LOCATION_RE = new RegExp(`^org/(${UUID})/dataset/(${UUID})/version/(${UUID})/$`);
const FILE_KEY_RE = new RegExp(`^(org/(${UUID})/dataset/(${UUID})/version/(${UUID})/)(${BOUND})_(${BOUND})\\.parquet$`);

/** The shape every message names, so that a refusal says what would have been accepted. */
export const DATASET_FILE_KEY_SHAPE = 'org/{org_id}/dataset/{dataset_uuid}/version/{dataset_version}/{start}_{end}.parquet';

export interface DatasetFileKey {
  org_id: string;
  dataset_uuid: string;
  dataset_version: string;
  /** The dataset version's location: the key without its file name, ending in `/`. */
  location: string;
}

/** The object-store location of a file-backed dataset version, as the registry records it at deploy. */
export function datasetLocation(orgId: string, datasetUuid: string, datasetVersion: string): string {
  return `org/${orgId}/dataset/${datasetUuid}/version/${datasetVersion}/`;
}

/** The Postgres location of a table-backed dataset version, as the registry records it at deploy. */
export function tableLocation(datasetUuid: string, datasetVersion: string): string {
  return `"ds_${datasetUuid.replace(/-/g, '')}"."v_${datasetVersion.replace(/-/g, '')}"`;
}

/** A dataset version location (`org/…/dataset/…/version/…/`)? */
export function isDatasetLocation(location: unknown): location is string {
  return typeof location === 'string' && LOCATION_RE.test(location);
}

/** A well-formed dataset file key, parsed; undefined for anything else (query results, `..`, absolute paths, other characters). */
export function parseDatasetFileKey(key: unknown): DatasetFileKey | undefined {
  if (typeof key !== 'string') return undefined;
  const m = FILE_KEY_RE.exec(key);
  return m ? { location: m[1]!, org_id: m[2]!, dataset_uuid: m[3]!, dataset_version: m[4]! } : undefined;
}

/** A key in a message: quoted, and cut short (a payload may hold 64 KiB; a task's error holds 4,000 characters). */
export function shownKey(key: unknown): string {
  const text = typeof key === 'string' ? key : String(JSON.stringify(key));
  return JSON.stringify(text.length > 300 ? `${text.slice(0, 300)}…` : text);
}

/**
 * The keys an input event claims to cover, unchecked: its payload's `files`, else its payload's
 * `key`, else the range's own file under the event's location. A `files` or `key` of the wrong
 * type is refused rather than skipped: the emitter meant something, and it is not a file list.
 */
export function claimedInputKeys(event: EventRef, operator: string): string[] {
  const { files, key } = event.payload ?? {};
  if (files !== undefined) {
    if (!Array.isArray(files) || !files.every((f) => typeof f === 'string')) throw new Error(`${operator}: the input event's payload.files must be a list of dataset file keys (${DATASET_FILE_KEY_SHAPE})`);
    return files as string[];
  }
  if (key !== undefined) {
    if (typeof key !== 'string') throw new Error(`${operator}: the input event's payload.key must be a dataset file key (${DATASET_FILE_KEY_SHAPE})`);
    return [key];
  }
  if (event.start !== null && event.end !== null) {
    if (!isDatasetLocation(event.location)) throw new Error(`${operator}: the input dataset version (${event.location}) is not stored as files; a range event names no file there`);
    return [rangeKey(event.location, event.start, event.end)];
  }
  throw new Error(`${operator}: the input event names no files (a range event, or a payload with key or files, is needed)`);
}

/** Why a key can never be read by this task, whatever the lineage: undefined when it may be, if its location is allowed. */
export function refusalOf(key: string, orgId: string, operator: string): string | undefined {
  const parsed = parseDatasetFileKey(key);
  if (!parsed) return `${operator}: input file ${shownKey(key)} is not a dataset file key (${DATASET_FILE_KEY_SHAPE}); event payloads cannot point at other data`;
  if (parsed.org_id !== orgId) return `${operator}: input file ${shownKey(key)} belongs to another org; event payloads cannot point at other data`;
  return undefined;
}

/**
 * Rule 1 for every key, then rule 2 against `event.location` alone: the keys whose location is
 * some other one (for the caller to look up). Throws on the first key refused outright.
 */
export function keysOutsideEvent(keys: string[], event: EventRef, orgId: string, operator: string): string[] {
  const outside: string[] = [];
  for (const key of keys) {
    const refused = refusalOf(key, orgId, operator);
    if (refused) throw new Error(refused);
    if (parseDatasetFileKey(key)!.location !== event.location) outside.push(key);
  }
  return outside;
}

/** Rule 2 against the locations the dispatcher allows: throws naming the first key under none of them. */
export function assertUnderLocations(keys: string[], locations: readonly string[], event: EventRef, operator: string): void {
  const allowed = new Set(locations);
  for (const key of keys) {
    if (!allowed.has(parseDatasetFileKey(key)!.location)) {
      throw new Error(`${operator}: input file ${shownKey(key)} is outside the input dataset version (${event.location}) and its lineage; event payloads cannot point at other data`);
    }
  }
}

/** Checks keys an operator is about to read or pass on for the task's input event (both rules). */
export async function assertReadableKeys(ctx: Pick<OperatorContext, 'payload' | 'readableLocations'>, event: EventRef, keys: string[], operator: string): Promise<void> {
  const outside = keysOutsideEvent(keys, event, ctx.payload.org_id, operator);
  if (outside.length) assertUnderLocations(outside, await ctx.readableLocations(), event, operator);
}

/** The files of the input event that the operator may read or pass on; throws (reading nothing) when any is refused. */
export async function resolveInputKeys(ctx: Pick<OperatorContext, 'payload' | 'readableLocations'>, event: EventRef, operator: string): Promise<string[]> {
  const keys = claimedInputKeys(event, operator);
  await assertReadableKeys(ctx, event, keys, operator);
  return keys;
}

/**
 * An output's location must be the one the registry records for its dataset version: an operator
 * writes only there (`org/…/version/…/` for files, `"ds_<hex>"."v_<hex>"` for a table). The payload
 * comes from the dispatcher; this keeps a wrong one from ever becoming a write elsewhere.
 */
export function assertOutputLocation(output: OutputRef, orgId: string, operator: string): string {
  const expected = output.dataset_version === null ? undefined : output.backend === 's3' ? datasetLocation(orgId, output.dataset_uuid, output.dataset_version) : tableLocation(output.dataset_uuid, output.dataset_version);
  if (!output.location || output.location !== expected) {
    throw new Error(`${operator}: output ${output.index} has location ${shownKey(output.location)}, not its dataset version's own (${expected ?? 'none'})`);
  }
  return output.location;
}

/** Whether every one of the (checked) keys is in the object store now: a range's input as it is, not as its event said (ADR 0022). */
export async function allPresent(store: Pick<ObjectStore, 'exists'>, keys: string[]): Promise<boolean> {
  for (const k of keys) if (!(await store.exists(k))) return false;
  return true;
}
