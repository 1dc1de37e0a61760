import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `trace_meter_jobs`: metering for a set of jobs, called from inside the statement that gave
 * them work or room — the statement that stores events (new tasks) and the one that completes
 * attempts (freed capacity) — so that their next tasks start without another round trip
 * (docs/benchmarks.md, "Dispatch").
 *
 * Each job without a worker pool and not `runtime: lambda` is metered by trace_start_tasks with
 * the settings of its DAG's active version, read from the version's spec; the others are
 * returned with `handled = false`, for the dispatcher's metering loop. Jobs are metered in
 * (dag_id, job_name) order, so two statements metering overlapping sets take the jobs' advisory
 * locks in the same order and cannot deadlock.
 *
 * Called in the final part of a statement whose data-modifying CTEs inserted or updated the tasks:
 * the function is VOLATILE, so each of its statements takes a new snapshot, which includes those
 * changes of its own transaction.
 */
export class MeterInStatement1764160000000 implements MigrationInterface {
  name = 'MeterInStatement1764160000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE FUNCTION trace_meter_jobs(p_jobs jsonb, p_transport text)
        RETURNS TABLE (dag_id uuid, job_name text, task_id uuid, handled boolean)
        LANGUAGE plpgsql VOLATILE AS $$
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
          IF v_job IS NULL OR v_job->>'worker_pool' IS NOT NULL OR v_job->>'runtime' = 'lambda' THEN
            RETURN QUERY SELECT r.dag, r.job, NULL::uuid, false;
          ELSE
            -- Started tasks; none when the job is at capacity. A row without a task means another
            -- version became active meanwhile: not handled, the metering loop takes it.
            RETURN QUERY SELECT r.dag, r.job, s.task_id, s.task_id IS NOT NULL
              FROM trace_start_tasks(r.dag, r.job, v_version, (v_job->'scaling'->>'max_concurrency')::integer,
                                     (v_job->>'timeout_seconds')::integer, p_transport) s;
          END IF;
          v_job := NULL;
        END LOOP;
      END
      $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION trace_meter_jobs(jsonb, text)`);
  }
}
