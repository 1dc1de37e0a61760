import { MigrationInterface, QueryRunner } from 'typeorm';
import { START_TASKS } from './1764150000000-LeanTaskPath';
import { CLAIM } from './1764170000000-ClaimInStatement';
import { METER_JOBS } from './1764180000000-MeterWithoutQueueing';

/**
 * Queue heads: metering from a completion no longer walks the job's started tasks.
 *
 * A started task leaves a dead entry at the front of `tasks_queued_order_idx` until VACUUM removes
 * it, and nothing else does: new tasks are inserted at the other end. Every metering of a job with
 * a backlog read the index from the job's first entry, so it walked every task started since the
 * last vacuum — 180 index pages, half a millisecond, per completion in the burn benchmark, and the
 * completion's queued-work probe walked them again (docs/benchmarks.md, "Dispatch").
 *
 * `job_queue_heads` keeps, per job, the (created_at, id) of the newest task metering has started.
 * With `p_from_head`, trace_start_tasks looks for queued tasks after it — an index descent straight
 * past the dead entries — and the completion's probe does the same. Completions meter so (through
 * `trace_meter_jobs(..., p_from_head => true)`); everything else reads the job from its start: the
 * statement that stores events (its own new tasks may sort before the head: `created_at` is the
 * transaction's start, not its commit) and the metering loop (by name, and in its full pass every
 * TRACE_DISPATCH_POLL_MS). So a queued task that sorts before the head — a retry, whose
 * `created_at` is its first attempt's, or a task whose transaction committed after a newer one
 * had started — is started by the next events statement or loop pass for its job, within
 * TRACE_DISPATCH_POLL_MS, as before (ADR 0012). The head only moves forward, under the job's lock.
 *
 * The task path's functions also plan as the task path's connections do (TASK_PATH_SETTINGS in
 * src/common/db/sql.ts): `enable_seqscan = off`, so that the plans they cache per connection do
 * not scan whole tables because they were made while the tables were small (ADR 0017).
 *
 * And `trace_claim` reads what its attempts' payloads share — the DAG's name, the version's
 * number, the DAG's outputs with their current versions — once per DAG version in the claim,
 * instead of once per attempt: a claim's attempts are mostly one job's.
 */
export class QueueHeads1764190000000 implements MigrationInterface {
  name = 'QueueHeads1764190000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE job_queue_heads (
        dag_id      uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        job_name    text NOT NULL,
        created_at  timestamptz NOT NULL,
        task_id     uuid NOT NULL,
        PRIMARY KEY (dag_id, job_name)
      )`);
    await q.query(`DROP FUNCTION trace_meter_jobs(jsonb, text, boolean)`);
    await q.query(`DROP FUNCTION trace_start_tasks(uuid, text, uuid, integer, integer, text)`);
    await q.query(`
      CREATE FUNCTION trace_start_tasks(p_dag uuid, p_job text, p_version uuid, p_max integer, p_timeout integer, p_delivery text,
                                        p_from_head boolean DEFAULT false)
        RETURNS TABLE (task_id uuid, active_version uuid)
        LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
      #variable_conflict use_column
      DECLARE
        v_active uuid;
        v_capacity integer;
        -- Where the job's queue is read from: its start, or (p_from_head) after the newest started task.
        v_after_at timestamptz := '-infinity';
        v_after_id uuid := '00000000-0000-0000-0000-000000000000';
      BEGIN
        -- The lock every metering of this job takes (pooled jobs too, in TaskStarter).
        PERFORM pg_advisory_xact_lock(hashtext('job:' || p_dag::text || ':' || p_job));
        -- The caller computed p_max from p_version; if another version is active now, it asks again.
        SELECT g.active_version_id INTO v_active FROM dags g WHERE g.id = p_dag;
        IF v_active IS DISTINCT FROM p_version THEN
          RETURN QUERY SELECT NULL::uuid, v_active;
          RETURN;
        END IF;
        SELECT p_max - count(*) INTO v_capacity FROM tasks t WHERE t.dag_id = p_dag AND t.job_name = p_job AND t.status = 'running';
        IF v_capacity <= 0 THEN
          RETURN;
        END IF;
        IF p_from_head THEN
          SELECT h.created_at, h.task_id INTO v_after_at, v_after_id FROM job_queue_heads h WHERE h.dag_id = p_dag AND h.job_name = p_job;
          IF NOT FOUND THEN
            v_after_at := '-infinity';
            v_after_id := '00000000-0000-0000-0000-000000000000';
          END IF;
        END IF;
        RETURN QUERY
          WITH s AS (
            UPDATE tasks SET status = 'running', attempt = tasks.attempt + 1, updated_at = now()
             WHERE tasks.id IN (SELECT t.id FROM tasks t
                                 WHERE t.dag_id = p_dag AND t.job_name = p_job AND t.status = 'queued' AND t.run_after <= now()
                                   AND (t.created_at, t.id) > (v_after_at, v_after_id)
                                 ORDER BY t.created_at, t.id LIMIT v_capacity FOR UPDATE SKIP LOCKED)
            RETURNING tasks.id, tasks.attempt, tasks.created_at
          ), a AS (
            INSERT INTO task_attempts (task_id, attempt, deadline_at, delivery)
            SELECT s.id, s.attempt, now() + make_interval(secs => p_timeout), p_delivery FROM s
          ), o AS (
            INSERT INTO dispatch_queue (task_id, attempt) SELECT s.id, s.attempt FROM s WHERE p_delivery = 'sqs'
          ), h AS (
            -- The head moves forward only: a pass from the start may have started older tasks.
            INSERT INTO job_queue_heads AS jh (dag_id, job_name, created_at, task_id)
            SELECT p_dag, p_job, s.created_at, s.id FROM s ORDER BY s.created_at DESC, s.id DESC LIMIT 1
            ON CONFLICT (dag_id, job_name) DO UPDATE SET created_at = EXCLUDED.created_at, task_id = EXCLUDED.task_id
             WHERE (jh.created_at, jh.task_id) < (EXCLUDED.created_at, EXCLUDED.task_id)
          )
          SELECT s.id, p_version FROM s;
        -- Wake the wrappers (local: they claim; SQS: the relay sends); Lambda is invoked by the caller.
        IF FOUND AND p_delivery <> 'lambda' THEN
          PERFORM pg_notify('trace_dispatch', '');
        END IF;
      END
      $$`);
    await q.query(`
      CREATE FUNCTION trace_meter_jobs(p_jobs jsonb, p_transport text, p_wait boolean DEFAULT true, p_from_head boolean DEFAULT false)
        RETURNS TABLE (dag_id uuid, job_name text, task_id uuid, handled boolean)
        LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
      #variable_conflict use_column
      DECLARE
        r record;
        v_version uuid;
        v_job jsonb;
      BEGIN
        FOR r IN SELECT DISTINCT (e->>'dag_id')::uuid AS dag, e->>'job_name' AS job
                   FROM jsonb_array_elements(p_jobs) e ORDER BY 1, 2 LOOP
          SELECT g.active_version_id, j INTO v_version, v_job
            FROM dags g JOIN dag_versions v ON v.id = g.active_version_id
            CROSS JOIN LATERAL jsonb_array_elements(v.spec->'jobs') j
           WHERE g.id = r.dag AND j->>'name' = r.job;
          IF v_job IS NULL OR v_job->>'worker_pool' IS NOT NULL OR v_job->>'runtime' = 'lambda'
             -- Without p_wait, a job another transaction is metering is left to the metering loop.
             OR (NOT p_wait AND NOT pg_try_advisory_xact_lock(hashtext('job:' || r.dag::text || ':' || r.job))) THEN
            RETURN QUERY SELECT r.dag, r.job, NULL::uuid, false;
          ELSE
            -- Started tasks; none when the job is at capacity. A row without a task means another
            -- version became active meanwhile: not handled, the metering loop takes it.
            RETURN QUERY SELECT r.dag, r.job, s.task_id, s.task_id IS NOT NULL
              FROM trace_start_tasks(r.dag, r.job, v_version, (v_job->'scaling'->>'max_concurrency')::integer,
                                     (v_job->>'timeout_seconds')::integer, p_transport, p_from_head) s;
          END IF;
          v_job := NULL;
        END LOOP;
      END
      $$`);
    await q.query(`
      CREATE OR REPLACE FUNCTION trace_claim(p_max integer, p_hashes bytea[], p_node uuid)
        RETURNS TABLE (n bigint, id uuid, attempt integer, cancel_requested boolean, org_id uuid, dag_id uuid, dag_name text,
                       version integer, version_id uuid, job_name text, input_index integer, deadline_at timestamptz,
                       pool_slot integer, pool_name text, event json, outputs json)
        LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
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
          ), t AS (
            SELECT a.n, a.deadline_at, a.pool_slot, t.id, t.attempt, t.cancel_requested, t.org_id, t.dag_id, t.dag_version_id,
                   t.job_name, t.input_index, t.event_id
              FROM a CROSS JOIN LATERAL (SELECT * FROM tasks WHERE tasks.id = a.task_id LIMIT 1) t
          ), v AS MATERIALIZED (
            -- What the payloads of one DAG version share, read once per claim (MATERIALIZED: not
            -- inlined into the join below, where it would be read again for every attempt).
            SELECT w.dag_id, w.dag_version_id, g.name, dv2.number,
                   (SELECT coalesce(json_agg(json_build_object(
                              'key', d.job_name || '#' || d.output_index, 'dataset_uuid', d.dataset_uuid, 'dataset_version', p.dataset_version,
                              'location', dv.location, 'backend', d.backend, 'update_strategy', d.update_strategy, 'unique_key', d.unique_key,
                              'cursor', d.cursor_column)), '[]')
                      FROM datasets d
                      LEFT JOIN dag_dataset_pointers p ON p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid
                      LEFT JOIN dataset_versions dv ON dv.dataset_version = p.dataset_version
                     WHERE d.dag_id = w.dag_id) AS outputs
              FROM (SELECT DISTINCT t.dag_id, t.dag_version_id FROM t) w
              CROSS JOIN LATERAL (SELECT dags.name FROM dags WHERE dags.id = w.dag_id LIMIT 1) g
              CROSS JOIN LATERAL (SELECT dag_versions.number FROM dag_versions WHERE dag_versions.id = w.dag_version_id LIMIT 1) dv2
          )
          SELECT t.n, t.id, t.attempt, t.cancel_requested, t.org_id, t.dag_id, v.name, v.number, t.dag_version_id,
                 t.job_name, t.input_index, t.deadline_at, t.pool_slot,
                 (SELECT l.pool_name FROM worker_slot_leases l WHERE l.task_id = t.id),
                 (SELECT row_to_json(ev) FROM (
                    SELECT e.id::text AS id, e.dataset_uuid, e.dataset_version, dv.location, e.kind, e.partition_key,
                           e.range_start::text AS start, e.range_end::text AS "end", e.cursor, e.payload
                      FROM events e JOIN dataset_versions dv ON dv.dataset_version = e.dataset_version WHERE e.id = t.event_id) ev),
                 v.outputs
            FROM t JOIN v ON v.dag_id = t.dag_id AND v.dag_version_id = t.dag_version_id
           ORDER BY t.n;
      END
      $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION trace_claim(integer, bytea[], uuid)`);
    await q.query(CLAIM);
    await q.query(`DROP FUNCTION trace_meter_jobs(jsonb, text, boolean, boolean)`);
    await q.query(`DROP FUNCTION trace_start_tasks(uuid, text, uuid, integer, integer, text, boolean)`);
    await q.query(START_TASKS);
    await q.query(METER_JOBS(true));
    await q.query(`DROP TABLE job_queue_heads`);
  }
}
