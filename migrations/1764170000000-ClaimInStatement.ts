import { MigrationInterface, QueryRunner } from 'typeorm';

/** trace_claim as this migration creates it (a later migration's down restores it). */
export const CLAIM = `
      CREATE FUNCTION trace_claim(p_max integer, p_hashes bytea[], p_node uuid)
        RETURNS TABLE (n bigint, id uuid, attempt integer, cancel_requested boolean, org_id uuid, dag_id uuid, dag_name text,
                       version integer, version_id uuid, job_name text, input_index integer, deadline_at timestamptz,
                       pool_slot integer, pool_name text, event json, outputs json)
        LANGUAGE plpgsql VOLATILE AS $$
      #variable_conflict use_column
      BEGIN
        RETURN QUERY
          WITH c AS (
            SELECT s.task_id, s.attempt, row_number() OVER () AS n FROM (
              SELECT ta.task_id, ta.attempt FROM task_attempts ta
               WHERE ta.delivery = 'local' AND ta.token_hash IS NULL AND ta.finished_at IS NULL
               ORDER BY ta.started_at, ta.task_id LIMIT p_max FOR UPDATE SKIP LOCKED) s
          ), a AS (
            UPDATE task_attempts a SET token_hash = x.token_hash, wrapper_node = p_node
              FROM c JOIN unnest(p_hashes) WITH ORDINALITY AS x(token_hash, n) ON x.n = c.n
             WHERE a.task_id = c.task_id AND a.attempt = c.attempt
            RETURNING a.task_id, a.deadline_at, a.pool_slot, x.n
          )
          SELECT a.n, t.id, t.attempt, t.cancel_requested, t.org_id, t.dag_id, g.name, v.number, v.id,
                 t.job_name, t.input_index, a.deadline_at, a.pool_slot,
                 (SELECT l.pool_name FROM worker_slot_leases l WHERE l.task_id = t.id),
                 (SELECT row_to_json(ev) FROM (
                    SELECT e.id::text AS id, e.dataset_uuid, e.dataset_version, dv.location, e.kind, e.partition_key,
                           e.range_start::text AS start, e.range_end::text AS "end", e.cursor, e.payload
                      FROM events e JOIN dataset_versions dv ON dv.dataset_version = e.dataset_version WHERE e.id = t.event_id) ev),
                 (SELECT coalesce(json_agg(json_build_object(
                            'key', d.job_name || '#' || d.output_index, 'dataset_uuid', d.dataset_uuid, 'dataset_version', p.dataset_version,
                            'location', dv.location, 'backend', d.backend, 'update_strategy', d.update_strategy, 'unique_key', d.unique_key,
                            'cursor', d.cursor_column)), '[]')
                    FROM datasets d
                    LEFT JOIN dag_dataset_pointers p ON p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid
                    LEFT JOIN dataset_versions dv ON dv.dataset_version = p.dataset_version
                   WHERE d.dag_id = t.dag_id)
            FROM a
            CROSS JOIN LATERAL (SELECT * FROM tasks WHERE tasks.id = a.task_id LIMIT 1) t
            CROSS JOIN LATERAL (SELECT dags.name FROM dags WHERE dags.id = t.dag_id LIMIT 1) g
            CROSS JOIN LATERAL (SELECT dv2.id, dv2.number FROM dag_versions dv2 WHERE dv2.id = t.dag_version_id LIMIT 1) v
           ORDER BY a.n;
      END
      $$`;

/**
 * `trace_claim`: the local transport's claim (ADR 0014) as a function, so that the statement that
 * stores events can also answer a wrapper's waiting claim (docs/benchmarks.md, "Dispatch").
 *
 * It takes up to `p_max` of the oldest claimable attempts (started, local, unbound, unfinished;
 * `FOR UPDATE SKIP LOCKED`, so concurrent claims share nothing), binds each to the caller with the
 * token hash at its position in `p_hashes` and to wrapper node `p_node`, and returns what their
 * payloads are built from, in claim order (`n`). POST /internal/task-claim is one call of it; the
 * events statement calls it after trace_meter_jobs has started the new tasks. The function is
 * VOLATILE, so it sees the attempts the calling statement started and the tasks and events it
 * inserted (a CTE of the caller could not).
 *
 * The payload columns are those of task-fetch (PAYLOAD_COLUMNS in
 * src/dispatcher/core/attempts.service.ts); test/e2e/hot-plans.e2e.test.ts checks that both read
 * the same payload for the same attempt. Each probe is by key (LATERAL ... LIMIT 1), so the cached
 * generic plan stays index lookups whatever the tables held when it was made.
 */
export class ClaimInStatement1764170000000 implements MigrationInterface {
  name = 'ClaimInStatement1764170000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(CLAIM);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION trace_claim(integer, bytea[], uuid)`);
  }
}
