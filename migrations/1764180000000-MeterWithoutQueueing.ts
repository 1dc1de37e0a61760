import { MigrationInterface, QueryRunner } from 'typeorm';

export const METER_JOBS = (withWait: boolean) => `
  CREATE FUNCTION trace_meter_jobs(p_jobs jsonb, p_transport text${withWait ? ', p_wait boolean DEFAULT true' : ''})
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
      IF v_job IS NULL OR v_job->>'worker_pool' IS NOT NULL OR v_job->>'runtime' = 'lambda'${
        withWait
          ? `
         -- Without p_wait, a job another transaction is metering is left to the metering loop.
         OR (NOT p_wait AND NOT pg_try_advisory_xact_lock(hashtext('job:' || r.dag::text || ':' || r.job)))`
          : ''
      } THEN
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
  $$`;

/**
 * `trace_meter_jobs(..., p_wait)`: with `p_wait` false the function does not queue for a job's
 * advisory lock; a job whose lock another transaction holds is returned not handled, and the
 * dispatcher's metering loop meters it once the caller has committed (MeterSignal.metered).
 *
 * The events statement calls it so. With producers posting while wrappers complete, every call
 * metered the consuming job under its lock — held by each metering transaction until its commit —
 * mostly to find the job full: events calls waited about 20 ms each behind the job's completions
 * (docs/benchmarks.md, "Dispatch"). Completions still wait: they free the capacity and start the
 * next tasks. The lock taken without waiting is the same lock (trace_start_tasks takes it again),
 * so metering stays one transaction at a time per job (ADR 0012).
 */
export class MeterWithoutQueueing1764180000000 implements MigrationInterface {
  name = 'MeterWithoutQueueing1764180000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION trace_meter_jobs(jsonb, text)`);
    await q.query(METER_JOBS(true));
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION trace_meter_jobs(jsonb, text, boolean)`);
    await q.query(METER_JOBS(false));
  }
}
