import { HttpStatus } from '@nestjs/common';
import { prepared, type Queryable } from '../../common/db';
import { badRequest, TraceError } from '../../common/errors';
import { eventScope } from './event-validation';
import type { JobKey, MeteredRow } from './meter-signal';
import type { EmittedEvent } from './task-payload';

export interface Producer {
  taskId: string;
  attempt: number;
  orgId: string;
  dagId: string;
  jobName: string;
  /** dataset_uuid of each of the job's outputs, by index (shared buffered outputs map to their target). */
  outputs: string[];
}

/**
 * Stores each event once under its idempotency key (producer_task_id, dataset_uuid, kind, scope)
 * and, only for events that are new, creates exactly one task per consuming job input (ADR 0010).
 * One statement per call whatever the number of events. Runs in the caller's transaction (or is
 * its own): the events, their tasks and the caller's own change commit together. Returns how many
 * were new and the jobs that got tasks; with `notify` the statement also sends them as NOTIFY
 * trace_tasks. With `meterWith` (the transport; a caller in a metering process) it also starts
 * those jobs' tasks itself (`metered`, for MeterSignal.metered once committed).
 *
 * With `gate` (the hash of the producer attempt's token secret), the statement itself is the attempt gate: it locks the
 * task and stores nothing unless the token's attempt is the running task's current, unfinished
 * attempt — then `current` is false and the caller refuses the call as stale.
 */
export async function ingestEvents<Claimed = never>(
  db: Queryable,
  producer: Producer,
  events: EmittedEvent[],
  notify: boolean,
  gate: Buffer | null = null,
  meterWith: string | null = null,
  claim: InStatementClaim | null = null,
): Promise<{ fresh: number; jobs: JobKey[]; current: boolean; metered: MeteredRow[]; full: JobKey[]; claimed: Claimed[] }> {
  if (events.length === 0) return { fresh: 0, jobs: [], current: true, metered: [], full: [], claimed: [] };
  const rows = events.map((e, i) => {
    const datasetUuid = producer.outputs[e.output ?? 0];
    if (!datasetUuid) {
      throw badRequest('validation_failed', `events[${i}].output: job "${producer.jobName}" has ${producer.outputs.length} output(s)`, [
        { field: `events[${i}].output`, reason: `job "${producer.jobName}" has no output ${e.output}` },
      ]);
    }
    return {
      dataset_uuid: datasetUuid,
      kind: e.kind ?? 'data',
      partition_key: e.partition_key ?? null,
      range_start: e.start === undefined ? null : String(e.start),
      range_end: e.end === undefined ? null : String(e.end),
      cursor: e.cursor ?? null,
      key: `${producer.taskId}/${datasetUuid}/${e.kind ?? 'data'}/${eventScope(e)}`,
      payload: e.payload ?? {},
    };
  });
  const [result] = await prepared<{ missing: number; fresh: number; jobs: JobKey[]; current: boolean; metered: MeteredRow[]; full: JobKey[]; claimed: Claimed[] }>(db, 'trace_event_ingest', EVENT_INGEST_SQL, [
    JSON.stringify(rows),
    producer.orgId,
    producer.taskId,
    producer.attempt,
    producer.dagId,
    notify,
    gate,
    meterWith,
    claim?.hashes.length ?? 0,
    claim?.hashes ?? [],
    claim?.node ?? null,
  ]);
  if (!result!.current) return { fresh: 0, jobs: [], current: false, metered: [], full: [], claimed: [] };
  if (result!.missing > 0) {
    // An event for an output without a current dataset version would be lost: refuse it (nothing was stored).
    throw new TraceError(HttpStatus.CONFLICT, 'no_current_version', `an output of job "${producer.jobName}" has no current dataset version to write events for`);
  }
  return { fresh: result!.fresh, jobs: result!.jobs, current: true, metered: result!.metered, full: result!.full, claimed: result!.claimed };
}

/** A waiting claim the events statement answers (trace_claim): one token hash per attempt it may bind, for wrapper node `node`. */
export interface InStatementClaim {
  hashes: Buffer[];
  node: string | null;
}

/**
 * One statement: the events ($1, with their dataset_uuid and idempotency key) are stored under
 * the dataset's current version — unless an output has none, then nothing is — and each event
 * that is new gets one task per consuming job input, with the job's settings from its DAG's
 * active version. Returns how many outputs lacked a version, how many events were new, and the
 * jobs that got tasks ($6: also NOTIFY trace_tasks for each), and with $8 (the transport) meters
 * those jobs in the same statement (`metered`: see trace_meter_jobs; `full`: the jobs it could start
 * nothing of, for the metering loop to look at again once committed). With $9 > 0 it then claims up to
 * $9 claimable attempts for a waiting wrapper (trace_claim, with token hashes $10 and wrapper node
 * $11), so the attempt it started reaches that wrapper without another statement (`claimed`);
 * then the transaction commits without waiting for its WAL to reach disk, so that the wrapper
 * has the attempt one disk flush sooner, and the caller runs WAL_FLUSH_SQL before it tells the
 * producer the events are accepted (ADR 0019).
 * With $7 (the hash of the secret of the token of attempt $4 of task $3)
 * nothing is stored unless that attempt is its running task's current, unfinished one (the task
 * row locked, so a completion or a newer attempt cannot slip in between). The probes are LATERAL
 * so the cached generic plan stays index lookups (test/e2e/hot-plans).
 */
export const EVENT_INGEST_SQL = `WITH g AS (
    SELECT t.id FROM task_attempts a JOIN tasks t ON t.id = a.task_id
     WHERE $7::bytea IS NOT NULL AND a.task_id = $3 AND a.attempt = $4 AND a.token_hash = $7
       AND a.finished_at IS NULL AND t.attempt = a.attempt AND t.status = 'running'
       FOR UPDATE OF t
  ), x AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
      AS x(dataset_uuid uuid, kind text, partition_key text, range_start bigint, range_end bigint, cursor text, key text, payload jsonb)
  ), xp AS (
    SELECT x.*, p.dataset_version FROM x
      LEFT JOIN LATERAL (SELECT dataset_version FROM dag_dataset_pointers WHERE dag_id = $5 AND dataset_uuid = x.dataset_uuid LIMIT 1) p ON true
  ), ev AS (
    INSERT INTO events (org_id, dataset_uuid, dataset_version, kind, partition_key, range_start, range_end, cursor,
                        producer_task_id, producer_attempt, idempotency_key, payload)
    SELECT $2, xp.dataset_uuid, xp.dataset_version, xp.kind, xp.partition_key, xp.range_start, xp.range_end, xp.cursor, $3, $4, xp.key, xp.payload
      FROM xp WHERE NOT EXISTS (SELECT 1 FROM xp m WHERE m.dataset_version IS NULL)
       AND ($7::bytea IS NULL OR EXISTS (SELECT 1 FROM g))
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, dataset_uuid
  ), tk AS (
    INSERT INTO tasks (org_id, dag_id, dag_version_id, job_name, event_id, input_index, max_attempts, timeout_seconds)
    SELECT g.org_id, c.dag_id, g.active_version_id, c.job_name, ev.id, c.input_index,
           coalesce((j.value->>'max_attempts')::int, 3), coalesce((j.value->>'timeout_seconds')::int, 900)
      FROM ev
      CROSS JOIN LATERAL (SELECT dag_id, job_name, input_index FROM dataset_consumers WHERE dataset_uuid = ev.dataset_uuid OFFSET 0) c
      CROSS JOIN LATERAL (SELECT org_id, active_version_id FROM dags WHERE id = c.dag_id LIMIT 1) g
      CROSS JOIN LATERAL (SELECT spec FROM dag_versions WHERE id = g.active_version_id LIMIT 1) v
      CROSS JOIN LATERAL jsonb_array_elements(v.spec->'jobs') j
     WHERE j.value->>'name' = c.job_name
    ON CONFLICT (event_id, dag_id, job_name, input_index) WHERE event_id IS NOT NULL DO NOTHING
    RETURNING dag_id, job_name
  ), jobs AS (
    SELECT DISTINCT dag_id, job_name FROM tk
  ), n AS (
    -- Tell metering which jobs have new work (docs/architecture/contracts.md, "Wake-ups").
    SELECT pg_notify('trace_tasks', dag_id || ' ' || job_name) FROM jobs WHERE $6
  ), m AS (
    -- With $8 (the transport), start the new tasks here (trace_meter_jobs runs after the inserts),
    -- without queueing for a job another transaction is metering (the loop takes that one).
    SELECT * FROM trace_meter_jobs((SELECT coalesce(jsonb_agg(jsonb_build_object('dag_id', dag_id, 'job_name', job_name)), '[]') FROM jobs), $8::text, false)
     WHERE $8::text IS NOT NULL
  ), k AS (
    -- After metering (its count is a one-time filter, evaluated first), and only when the events
    -- are stored: the gate passed and every output has a current version (else the call fails).
    SELECT * FROM trace_claim($9::int, $10::bytea[], $11::uuid)
     WHERE $9::int > 0 AND (SELECT count(*) FROM m) >= 0 AND ($7::bytea IS NULL OR EXISTS (SELECT 1 FROM g))
       AND NOT EXISTS (SELECT 1 FROM xp WHERE dataset_version IS NULL)
  )
  SELECT ($7::bytea IS NULL OR EXISTS (SELECT 1 FROM g)) AS current,
         (SELECT count(*)::int FROM xp WHERE dataset_version IS NULL) AS missing,
         (SELECT count(*)::int FROM ev) AS fresh,
         (SELECT coalesce(json_agg(json_build_object('dag_id', dag_id, 'job_name', job_name)), '[]') FROM jobs) AS jobs,
         (SELECT coalesce(json_agg(m), '[]') FROM m) AS metered,
         -- Jobs metered here that started nothing (full): a completion running meanwhile may have
         -- skipped metering them (it saw no queued work, ours not committed), so the loop looks again.
         (SELECT coalesce(json_agg(json_build_object('dag_id', j.dag_id, 'job_name', j.job_name)), '[]') FROM jobs j
           WHERE $8::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM m WHERE m.dag_id = j.dag_id AND m.job_name = j.job_name)) AS full,
         (SELECT coalesce(json_agg(k ORDER BY k.n), '[]') FROM k) AS claimed,
         (SELECT count(*) FROM n) AS notified,
         set_config('synchronous_commit', CASE WHEN $9::int > 0 THEN 'off' ELSE current_setting('synchronous_commit') END, true) AS commit_mode`;

/**
 * Makes every commit before it durable: `setval` writes WAL and takes a transaction id, so its
 * transaction commits synchronously and flushes the WAL up to its own commit record — past the
 * asynchronous commit of an events statement that answered a claim (EVENT_INGEST_SQL). Run before
 * the producer is told its events are accepted (ADR 0019; migration 1764210000000-WalFlush).
 */
export const WAL_FLUSH_SQL = `SELECT setval('trace_wal_flush', 1)`;

