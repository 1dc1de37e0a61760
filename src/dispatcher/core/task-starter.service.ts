import { Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { prepared, sql } from '../../common/db';
import { SpecCache } from './spec-cache';

const JOBS_PER_PASS = 500;

export interface JobKey {
  dag_id: string;
  job_name: string;
}

/**
 * Metering: starts queued tasks within min(scaling.max_concurrency, pool size) per job, leasing one
 * worker-pool slot per running task. Each job is metered under its own advisory lock (and its pool's),
 * so any number of dispatcher processes can run this at once without double-starting (ADR 0012).
 */
@Injectable()
export class TaskStarter {
  constructor(
    private readonly db: DataSource,
    private readonly specs: SpecCache,
  ) {}

  /**
   * One pass over every job with startable work. Returns how many attempts it started, and the
   * `runtime: lambda` tasks among them, which the dispatcher invokes itself (they skip the transport).
   */
  async startReady(): Promise<{ started: number; lambda: string[]; more: boolean }> {
    // The jobs with queued work, found by a skip scan over tasks_queued_order_idx: one index probe
    // per job, however long the backlog (a DISTINCT would read every queued task).
    const jobs = await sql<JobKey>(
      this.db,
      `WITH RECURSIVE j AS (
         (SELECT dag_id, job_name FROM tasks WHERE status = 'queued' ORDER BY dag_id, job_name LIMIT 1)
         UNION ALL
         SELECT n.dag_id, n.job_name FROM j, LATERAL (
           SELECT dag_id, job_name FROM tasks
            WHERE status = 'queued' AND (dag_id, job_name) > (j.dag_id, j.job_name)
            ORDER BY dag_id, job_name LIMIT 1) n
       )
       SELECT dag_id, job_name FROM j
        WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.dag_id = j.dag_id AND t.job_name = j.job_name AND t.status = 'queued' AND t.run_after <= now())
        LIMIT $1`,
      [JOBS_PER_PASS],
    );
    // A pass fills each job it visits up to its capacity, so another pass can only start more
    // when this one did not visit every job (a completion meanwhile wakes the loop anyway).
    return { ...(await this.startJobs(jobs)), more: jobs.length === JOBS_PER_PASS };
  }

  /** Meters the given jobs only: those a NOTIFY named (new tasks, or a finished one freed capacity). */
  async startJobs(jobs: JobKey[]): Promise<{ started: number; lambda: string[] }> {
    let started = 0;
    const lambda: string[] = [];
    for (const job of jobs) {
      const result = await this.db.transaction((tx) => this.startForJob(tx, job));
      started += result.ids.length;
      if (result.lambda) lambda.push(...result.ids);
    }
    return { started, lambda };
  }

  private async startForJob(tx: EntityManager, { dag_id, job_name }: JobKey): Promise<{ ids: string[]; lambda: boolean }> {
    await prepared(tx, 'trace_meter_lock', `SELECT pg_advisory_xact_lock(hashtext($1))`, [`job:${dag_id}:${job_name}`]);
    // Execution settings come from the active version: they apply at once to queued work.
    const [active] = await prepared<{ version_id: string | null; running: number }>(
      tx,
      'trace_meter_running',
      `SELECT g.active_version_id AS version_id,
              (SELECT count(*)::int FROM tasks WHERE dag_id = $1 AND job_name = $2 AND status = 'running') AS running
         FROM dags g WHERE g.id = $1`,
      [dag_id, job_name],
    );
    const spec = active?.version_id ? await this.specs.get(tx, active.version_id) : undefined;
    const job = spec?.jobs.find((j) => j.name === job_name);
    if (!job) {
      // The job is gone from the active version: its queued work can never run.
      await tx.query(
        `UPDATE tasks SET status = 'canceled', finished_at = now(), updated_at = now(), error = 'job is not in the active DAG version'
          WHERE dag_id = $1 AND job_name = $2 AND status = 'queued'`,
        [dag_id, job_name],
      );
      return { ids: [], lambda: false };
    }
    const lambda = job.runtime === 'lambda';
    const pool = job.worker_pool ? spec!.worker_pools.find((p) => p.name === job.worker_pool) : undefined;
    if (pool) await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`pool:${dag_id}:${pool.name}`]);

    const running = active!.running;
    let capacity = Math.min(job.scaling.max_concurrency, pool ? pool.slots.length : Infinity) - running;
    let freeSlots: number[] = [];
    if (pool) {
      freeSlots = (
        await sql<{ slot: number }>(
          tx,
          `SELECT s AS slot FROM generate_series(0, $3 - 1) s
            WHERE NOT EXISTS (SELECT 1 FROM worker_slot_leases l WHERE l.dag_id = $1 AND l.pool_name = $2 AND l.slot = s)
            ORDER BY s`,
          [dag_id, pool.name, pool.slots.length],
        )
      ).map((r) => r.slot);
      capacity = Math.min(capacity, freeSlots.length);
    }
    if (capacity <= 0) return { ids: [], lambda };

    if (!pool) {
      // One statement: start the attempts and put them on the outbox (wrappers) — or not (Lambda).
      const ids = await prepared<{ id: string }>(
        tx,
        'trace_meter_start',
        `WITH s AS (
           UPDATE tasks SET status = 'running', attempt = attempt + 1, updated_at = now()
            WHERE id IN (SELECT id FROM tasks WHERE dag_id = $1 AND job_name = $2 AND status = 'queued' AND run_after <= now()
                          ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING id, attempt
         ), a AS (
           INSERT INTO task_attempts (task_id, attempt, deadline_at) SELECT id, attempt, now() + make_interval(secs => $4) FROM s
         ), q AS (
           INSERT INTO dispatch_queue (task_id, attempt) SELECT id, attempt FROM s WHERE NOT $5 RETURNING 1
         ), n AS (
           SELECT pg_notify('trace_dispatch', '') FROM (SELECT 1 FROM q LIMIT 1) z
         )
         SELECT id, (SELECT count(*) FROM n) AS notified FROM s`,
        [dag_id, job_name, capacity, job.timeout_seconds, lambda],
      );
      return { ids: ids.map((r) => r.id), lambda };
    }

    const started = await sql<{ id: string; attempt: number; timeout_seconds: number }>(
      tx,
      `UPDATE tasks SET status = 'running', attempt = attempt + 1, updated_at = now()
        WHERE id IN (SELECT id FROM tasks WHERE dag_id = $1 AND job_name = $2 AND status = 'queued' AND run_after <= now()
                      ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
       RETURNING id, attempt, timeout_seconds`,
      [dag_id, job_name, capacity],
    );
    for (const [i, t] of started.entries()) {
      const slot = freeSlots[i]!;
      await tx.query(
        `INSERT INTO task_attempts (task_id, attempt, pool_slot, deadline_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4))`,
        [t.id, t.attempt, slot, job.timeout_seconds],
      );
      await tx.query(`INSERT INTO worker_slot_leases (dag_id, pool_name, slot, task_id) VALUES ($1, $2, $3, $4)`, [dag_id, pool.name, slot, t.id]);
      if (!lambda) await tx.query(`INSERT INTO dispatch_queue (task_id, attempt) VALUES ($1, $2)`, [t.id, t.attempt]);
    }
    if (started.length && !lambda) await tx.query(`SELECT pg_notify('trace_dispatch', '')`);
    return { ids: started.map((t) => t.id), lambda };
  }
}
