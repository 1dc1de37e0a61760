import type { EntityManager } from 'typeorm';
import { sql, sqlOne } from '../../common/db';
import { badRequest } from '../../common/errors';
import { eventScope } from './event-validation';
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
 * and, only when it is new, creates exactly one task per consuming job input (ADR 0010). Runs in
 * the caller's transaction: the events, their tasks and the caller's own change commit together.
 * Returns how many events were new.
 */
export async function ingestEvents(tx: EntityManager, producer: Producer, events: EmittedEvent[]): Promise<number> {
  let fresh = 0;
  for (const [i, e] of events.entries()) {
    const datasetUuid = producer.outputs[e.output ?? 0];
    if (!datasetUuid) {
      throw badRequest('validation_failed', `events[${i}].output: job "${producer.jobName}" has ${producer.outputs.length} output(s)`, [
        { field: `events[${i}].output`, reason: `job "${producer.jobName}" has no output ${e.output}` },
      ]);
    }
    const key = `${producer.taskId}/${datasetUuid}/${e.kind ?? 'data'}/${eventScope(e)}`;
    const inserted = await sqlOne<{ id: string }>(
      tx,
      `INSERT INTO events (org_id, dataset_uuid, dataset_version, kind, partition_key, range_start, range_end, cursor,
                           producer_task_id, producer_attempt, idempotency_key, payload)
       SELECT $1, $2, p.dataset_version, $3, $4, $5, $6, $7, $8, $9, $10, $11
         FROM dag_dataset_pointers p WHERE p.dag_id = $12 AND p.dataset_uuid = $2
       ON CONFLICT (idempotency_key) DO NOTHING
       RETURNING id`,
      [producer.orgId, datasetUuid, e.kind ?? 'data', e.partition_key ?? null, e.start ?? null, e.end ?? null, e.cursor ?? null,
        producer.taskId, producer.attempt, key, JSON.stringify(e.payload ?? {}), producer.dagId],
    );
    if (!inserted) continue; // already stored by an earlier delivery or attempt
    fresh++;
    await tx.query(
      `INSERT INTO tasks (org_id, dag_id, dag_version_id, job_name, event_id, input_index, max_attempts, timeout_seconds)
       SELECT g.org_id, c.dag_id, g.active_version_id, c.job_name, $1, c.input_index,
              coalesce((j.value->>'max_attempts')::int, 3), coalesce((j.value->>'timeout_seconds')::int, 900)
         FROM dataset_consumers c
         JOIN dags g ON g.id = c.dag_id
         JOIN dag_versions v ON v.id = g.active_version_id
         CROSS JOIN LATERAL jsonb_array_elements(v.spec->'jobs') j
        WHERE c.dataset_uuid = $2 AND j.value->>'name' = c.job_name
       ON CONFLICT (event_id, dag_id, job_name, input_index) WHERE event_id IS NOT NULL DO NOTHING`,
      [inserted.id, datasetUuid],
    );
  }
  if (fresh > 0) await tx.query(`SELECT pg_notify('trace_tasks', '')`);
  return fresh;
}

/** The dataset_uuid behind each output of a job in its DAG (writes_to outputs resolve to their target). */
export async function jobOutputs(tx: EntityManager, dagId: string, spec: { jobs: { name: string; outputs: { writes_to?: { job: string; output: number } }[] }[] }, jobName: string): Promise<string[]> {
  const job = spec.jobs.find((j) => j.name === jobName);
  if (!job) return [];
  const rows = await sql<{ key: string; dataset_uuid: string }>(tx, `SELECT job_name || '#' || output_index AS key, dataset_uuid FROM datasets WHERE dag_id = $1`, [dagId]);
  const byKey = new Map(rows.map((r) => [r.key, r.dataset_uuid]));
  return job.outputs.map((o, i) => byKey.get(o.writes_to ? `${o.writes_to.job}#${o.writes_to.output}` : `${jobName}#${i}`) ?? '');
}
