import { MigrationInterface, QueryRunner } from 'typeorm';

/** trace_start_tasks as this migration creates it (a later migration's down restores it). */
export const START_TASKS = `
      CREATE FUNCTION trace_start_tasks(p_dag uuid, p_job text, p_version uuid, p_max integer, p_timeout integer, p_delivery text)
        RETURNS TABLE (task_id uuid, active_version uuid)
        LANGUAGE plpgsql VOLATILE AS $$
      #variable_conflict use_column
      DECLARE
        v_active uuid;
        v_capacity integer;
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
        RETURN QUERY
          WITH s AS (
            UPDATE tasks SET status = 'running', attempt = tasks.attempt + 1, updated_at = now()
             WHERE tasks.id IN (SELECT t.id FROM tasks t
                                 WHERE t.dag_id = p_dag AND t.job_name = p_job AND t.status = 'queued' AND t.run_after <= now()
                                 ORDER BY t.created_at, t.id LIMIT v_capacity FOR UPDATE SKIP LOCKED)
            RETURNING tasks.id, tasks.attempt
          ), a AS (
            INSERT INTO task_attempts (task_id, attempt, deadline_at, delivery)
            SELECT s.id, s.attempt, now() + make_interval(secs => p_timeout), p_delivery FROM s
          ), o AS (
            INSERT INTO dispatch_queue (task_id, attempt) SELECT s.id, s.attempt FROM s WHERE p_delivery = 'sqs'
          )
          SELECT s.id, p_version FROM s;
        -- Wake the wrappers (local: they claim; SQS: the relay sends); Lambda is invoked by the caller.
        IF FOUND AND p_delivery <> 'lambda' THEN
          PERFORM pg_notify('trace_dispatch', '');
        END IF;
      END
      $$`;

/**
 * The task path in fewer round trips (docs/benchmarks.md, "Dispatch").
 *
 * 1. How each started attempt reaches a wrapper (`task_attempts.delivery`). With the local
 *    transport the started, unbound attempt is itself the queue entry: wrappers claim attempts
 *    through POST /internal/task-claim, which binds them in the statement that selects them
 *    (SKIP LOCKED), so the local transport writes no dispatch_queue row. dispatch_queue stays the
 *    outbox of the SQS relay. Attempts started before this migration have no recorded delivery
 *    (NULL): with SQS their outbox rows are relayed as before; with the local transport one still
 *    waiting in dispatch_queue is not claimable and is retried by the reaper at its deadline.
 *
 * 2. `trace_start_tasks`: metering a job (ADR 0012) in one call instead of five statements. It
 *    takes the job's advisory lock, then counts the running tasks and starts queued ones in
 *    statements of their own — in READ COMMITTED each statement of a volatile function takes a
 *    new snapshot, so the count sees every start committed before the lock was granted, exactly
 *    as the multi-statement transaction did.
 */
export class LeanTaskPath1764150000000 implements MigrationInterface {
  name = 'LeanTaskPath1764150000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE task_attempts ADD COLUMN delivery text CHECK (delivery IN ('local', 'sqs', 'lambda'))`);
    // The local transport's queue: started, not yet claimed, not finished — oldest first.
    await q.query(`CREATE INDEX task_attempts_claimable_idx ON task_attempts (started_at, task_id)
                     WHERE delivery = 'local' AND token_hash IS NULL AND finished_at IS NULL`);
    await q.query(START_TASKS);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION trace_start_tasks(uuid, text, uuid, integer, integer, text)`);
    await q.query(`DROP INDEX task_attempts_claimable_idx`);
    await q.query(`ALTER TABLE task_attempts DROP COLUMN delivery`);
  }
}
