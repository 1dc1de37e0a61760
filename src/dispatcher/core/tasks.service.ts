import { HttpStatus, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { sql, sqlOne } from '../../common/db';
import { forbidden, notFound, TraceError } from '../../common/errors';
import { isOrgAdmin, type Principal } from '../../common/identity';
import type { DagSpec } from '../../registry/dags/dag-spec';
import { releaseSlot } from './attempts.service';

export const TASK_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;

const TASK_COLUMNS = `t.id, g.name AS dag, t.job_name AS job, t.status, t.attempt, t.max_attempts, t.cancel_requested,
  t.event_id::text AS event_id, t.input_index, t.error, t.created_at, t.updated_at, t.finished_at`;

/** The user-facing side of tasks: trigger a source run, list, inspect, cancel. Org-scoped throughout. */
@Injectable()
export class TasksService {
  constructor(private readonly db: DataSource) {}

  /**
   * A source run: one task with no input event. Its id is the run's durable producer_task_id;
   * restarting it (a retry) keeps the id, so the events it re-emits deduplicate.
   */
  async trigger(principal: Principal, dagName: string, jobName: string): Promise<{ task_id: string; producer_task_id: string; status: string }> {
    return this.db.transaction(async (tx) => {
      const dag = await sqlOne<{ id: string; version_id: string | null; spec: DagSpec | null }>(
        tx,
        `SELECT g.id, g.active_version_id AS version_id, v.spec FROM dags g LEFT JOIN dag_versions v ON v.id = g.active_version_id
          WHERE g.org_id = $1 AND g.name = $2`,
        [principal.orgId, dagName],
      );
      if (!dag?.spec) throw notFound('dag_not_found', `no active DAG named "${dagName}"`);
      if (!isOrgAdmin(principal)) {
        const grant = await sqlOne(tx, `SELECT 1 FROM dag_grants WHERE dag_id = $1 AND user_id = $2`, [dag.id, principal.userId]);
        if (!grant) throw forbidden('dag_trigger_forbidden', `you may not trigger DAG "${dagName}"; an org admin can grant it`);
      }
      const job = dag.spec.jobs.find((j) => j.name === jobName);
      if (!job) throw notFound('job_not_found', `DAG "${dagName}" has no job "${jobName}"`);
      if (job.inputs.length > 0) {
        throw new TraceError(HttpStatus.CONFLICT, 'not_a_source_job', `job "${jobName}" reads datasets; it runs when events arrive, not by trigger`);
      }
      const task = (await sqlOne<{ id: string; status: string }>(
        tx,
        `INSERT INTO tasks (org_id, dag_id, dag_version_id, job_name, max_attempts, timeout_seconds, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, status`,
        [principal.orgId, dag.id, dag.version_id, jobName, job.max_attempts, job.timeout_seconds, principal.userId],
      ))!;
      await tx.query(`SELECT pg_notify('trace_tasks', $1)`, [`${dag.id} ${jobName}`]);
      return { task_id: task.id, producer_task_id: task.id, status: task.status };
    });
  }

  list(orgId: string, filter: { dag?: string; job?: string; status?: string; limit: number }) {
    return sql(
      this.db,
      `SELECT ${TASK_COLUMNS} FROM tasks t JOIN dags g ON g.id = t.dag_id
        WHERE t.org_id = $1 AND ($2::text IS NULL OR g.name = $2) AND ($3::text IS NULL OR t.job_name = $3) AND ($4::text IS NULL OR t.status = $4)
        ORDER BY t.created_at DESC, t.id LIMIT $5`,
      [orgId, filter.dag ?? null, filter.job ?? null, filter.status ?? null, filter.limit],
    );
  }

  async get(orgId: string, taskId: string) {
    const task = await sqlOne(this.db, `SELECT ${TASK_COLUMNS} FROM tasks t JOIN dags g ON g.id = t.dag_id WHERE t.org_id = $1 AND t.id = $2`, [orgId, taskId]);
    if (!task) throw notFound('task_not_found', `no task ${taskId}`);
    const attempts = await sql(
      this.db,
      `SELECT attempt, started_at, deadline_at, finished_at, outcome, error, pool_slot FROM task_attempts WHERE task_id = $1 ORDER BY attempt`,
      [taskId],
    );
    const events = await sql(
      this.db,
      `SELECT id::text, dataset_uuid, dataset_version, kind, partition_key, range_start::text AS start, range_end::text AS "end",
              cursor, producer_attempt, payload, created_at
         FROM events e WHERE e.producer_task_id = $1 ORDER BY e.id`,
      [taskId],
    );
    return { ...task, attempts, events };
  }

  /**
   * Queued: canceled at once. Running: cancel is requested; the wrapper sees it (task-fetch answers
   * Canceled, or its status poll does), stops the operator and reports canceled. Done: 409.
   */
  async cancel(principal: Principal, taskId: string) {
    await this.db.transaction(async (tx) => {
      const t = await sqlOne<{ status: string; dag_id: string }>(tx, `SELECT status, dag_id FROM tasks WHERE org_id = $1 AND id = $2 FOR UPDATE`, [principal.orgId, taskId]);
      if (!t) throw notFound('task_not_found', `no task ${taskId}`);
      if (!isOrgAdmin(principal) && !(await sqlOne(tx, `SELECT 1 FROM dag_grants WHERE dag_id = $1 AND user_id = $2`, [t.dag_id, principal.userId]))) {
        throw forbidden('dag_trigger_forbidden', 'you may not cancel tasks of this DAG');
      }
      if (!['queued', 'running'].includes(t.status)) throw new TraceError(HttpStatus.CONFLICT, 'task_finished', `task ${taskId} is already ${t.status}`);
      if (t.status === 'queued') {
        await tx.query(`UPDATE tasks SET status = 'canceled', cancel_requested = true, finished_at = now(), updated_at = now() WHERE id = $1`, [taskId]);
        await tx.query(`DELETE FROM dispatch_queue WHERE task_id = $1`, [taskId]);
        await releaseSlot(tx, taskId);
      } else {
        await tx.query(`UPDATE tasks SET cancel_requested = true, updated_at = now() WHERE id = $1`, [taskId]);
      }
    });
    return this.get(principal.orgId, taskId);
  }
}
