import { HttpStatus } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { sql } from '../../common/db';
import { badRequest, TraceError } from '../../common/errors';
import { eventScope } from './event-validation';
import type { JobKey } from './meter-signal';
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
 * Two statements per call whatever the number of events. Runs in the caller's transaction: the
 * events, their tasks and the caller's own change commit together. Returns how many were new and
 * the jobs that got tasks; with `notify` the statement also sends them as NOTIFY trace_tasks
 * (MeterSignal: a caller in a metering process wakes its own loop after commit instead).
 */
export async function ingestEvents(tx: EntityManager, producer: Producer, events: EmittedEvent[], notify: boolean): Promise<{ fresh: number; jobs: JobKey[] }> {
  if (events.length === 0) return { fresh: 0, jobs: [] };
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
  await assertCurrentVersions(tx, producer, rows.map((r) => r.dataset_uuid));
  const inserted = await sql<{ id: string; dataset_uuid: string }>(
    tx,
    `WITH x AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb)
         AS x(dataset_uuid uuid, kind text, partition_key text, range_start bigint, range_end bigint, cursor text, key text, payload jsonb)
     )
     INSERT INTO events (org_id, dataset_uuid, dataset_version, kind, partition_key, range_start, range_end, cursor,
                         producer_task_id, producer_attempt, idempotency_key, payload)
     SELECT $2, x.dataset_uuid, p.dataset_version, x.kind, x.partition_key, x.range_start, x.range_end, x.cursor, $3, $4, x.key, x.payload
       FROM x JOIN dag_dataset_pointers p ON p.dag_id = $5 AND p.dataset_uuid = x.dataset_uuid
     ON CONFLICT (idempotency_key) DO NOTHING
     RETURNING id, dataset_uuid`,
    [JSON.stringify(rows), producer.orgId, producer.taskId, producer.attempt, producer.dagId],
  );
  if (inserted.length === 0) return { fresh: 0, jobs: [] };
  const jobs = await sql<JobKey>(
    tx,
    `WITH ins AS (
     INSERT INTO tasks (org_id, dag_id, dag_version_id, job_name, event_id, input_index, max_attempts, timeout_seconds)
     SELECT g.org_id, c.dag_id, g.active_version_id, c.job_name, e.id, c.input_index,
            coalesce((j.value->>'max_attempts')::int, 3), coalesce((j.value->>'timeout_seconds')::int, 900)
       FROM unnest($1::bigint[], $2::uuid[]) AS e(id, dataset_uuid)
       JOIN dataset_consumers c ON c.dataset_uuid = e.dataset_uuid
       JOIN dags g ON g.id = c.dag_id
       JOIN dag_versions v ON v.id = g.active_version_id
       CROSS JOIN LATERAL jsonb_array_elements(v.spec->'jobs') j
      WHERE j.value->>'name' = c.job_name
     ON CONFLICT (event_id, dag_id, job_name, input_index) WHERE event_id IS NOT NULL DO NOTHING
     RETURNING dag_id, job_name
     ), j AS (SELECT DISTINCT dag_id, job_name FROM ins)
     -- Tell metering which jobs have new work (docs/architecture/contracts.md, "Wake-ups").
     SELECT dag_id, job_name, CASE WHEN $3 THEN pg_notify('trace_tasks', dag_id || ' ' || job_name) END AS notified FROM j`,
    [inserted.map((r) => r.id), inserted.map((r) => r.dataset_uuid), notify],
  );
  return { fresh: inserted.length, jobs: jobs.map(({ dag_id, job_name }) => ({ dag_id, job_name })) };
}

/** An event for an output without a current dataset version would be lost: refuse it instead. */
async function assertCurrentVersions(tx: EntityManager, producer: Producer, uuids: string[]): Promise<void> {
  const distinct = [...new Set(uuids)];
  const found = await sql<{ dataset_uuid: string }>(tx, `SELECT dataset_uuid FROM dag_dataset_pointers WHERE dag_id = $1 AND dataset_uuid = ANY ($2)`, [producer.dagId, distinct]);
  if (found.length < distinct.length) {
    throw new TraceError(HttpStatus.CONFLICT, 'no_current_version', `an output of job "${producer.jobName}" has no current dataset version to write events for`);
  }
}
