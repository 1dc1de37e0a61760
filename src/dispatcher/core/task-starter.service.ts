import { Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { prepared, sql, sqlOne } from '../../common/db';
import { TraceConfig } from '../../config';
import type { JobKey } from './meter-signal';
import { SpecCache } from './spec-cache';

const JOBS_PER_PASS = 500;

/**
 * The metering loop's start of a job without a worker pool (trace_start_tasks). Its transaction
 * commits without waiting for the WAL flush, so the job's lock is held only while the starts are
 * made, not through the flush (ADR 0012, "metering commits asynchronously"); the setting is its
 * transaction's only.
 */
export const METER_START_SQL = `SELECT s.task_id, s.active_version
   FROM (SELECT set_config('synchronous_commit', 'off', true)) c, trace_start_tasks($1, $2, $3, $4, $5, $6) s`;

/**
 * Metering: starts queued tasks within min(scaling.max_concurrency, pool size) per job, leasing one
 * worker-pool slot per running task. Each job is metered under its own advisory lock (and its pool's),
 * so any number of dispatcher processes can run this at once without double-starting (ADR 0012).
 */
@Injectable()
export class TaskStarter {
  /** The DAG version last seen active, per DAG (trace_start_tasks says when it has changed). */
  private readonly activeVersions = new Map<string, string>();

  constructor(
    private readonly db: DataSource,
    private readonly specs: SpecCache,
    private readonly config: TraceConfig,
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
      const result = (await this.startFast(job)) ?? (await this.db.transaction((tx) => this.startForJob(tx, job)));
      started += result.ids.length;
      if (result.lambda) lambda.push(...result.ids);
    }
    return { started, lambda };
  }

  /**
   * The common case in one round trip: a job without a worker pool, metered by trace_start_tasks
   * (the same lock, count and start as startForJob, inside one function call). The settings
   * come from the version this process last saw active for the DAG; the function refuses if
   * another one is active now, and the call is made again with that one's settings. Undefined
   * when the job needs the general path: it has a worker pool, or it is gone from the active version.
   */
  private async startFast({ dag_id, job_name }: JobKey): Promise<{ ids: string[]; lambda: boolean } | undefined> {
    let versionId = this.activeVersions.get(dag_id) ?? (await sqlOne<{ id: string | null }>(this.db, `SELECT active_version_id AS id FROM dags WHERE id = $1`, [dag_id]))?.id;
    for (let round = 0; versionId && round < 3; round++) {
      const job = (await this.specs.get(this.db, versionId)).jobs.find((j) => j.name === job_name);
      if (!job || job.worker_pool) return undefined;
      const lambda = job.runtime === 'lambda';
      const rows = await prepared<{ task_id: string | null; active_version: string | null }>(
        this.db,
        'trace_meter_start',
        METER_START_SQL,
        [dag_id, job_name, versionId, job.scaling.max_concurrency, job.timeout_seconds, lambda ? 'lambda' : this.config.dispatch.transport],
      );
      if (rows.length === 1 && rows[0]!.task_id === null) {
        versionId = rows[0]!.active_version ?? undefined; // another version is active: its settings apply
        if (versionId) this.activeVersions.set(dag_id, versionId);
        else this.activeVersions.delete(dag_id);
        continue;
      }
      this.activeVersions.set(dag_id, versionId);
      return { ids: rows.map((r) => r.task_id!), lambda };
    }
    return undefined;
  }

  /**
   * The general path, in a transaction under the job's lock: jobs with a worker pool (a slot
   * leased per started task, under the pool's lock too), and jobs gone from the active version.
   */
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
    // How the attempts reach their runner: the dispatcher invokes Lambda itself; otherwise the
    // transport — local wrappers claim the unbound attempt itself, SQS needs an outbox row to relay.
    const delivery = lambda ? 'lambda' : this.config.dispatch.transport;
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
      // The version read under the lock is the active one, so the function starts at once.
      const ids = await sql<{ task_id: string }>(tx, `SELECT task_id FROM trace_start_tasks($1, $2, $3, $4, $5, $6) WHERE task_id IS NOT NULL`, [
        dag_id,
        job_name,
        active!.version_id,
        job.scaling.max_concurrency,
        job.timeout_seconds,
        delivery,
      ]);
      return { ids: ids.map((r) => r.task_id), lambda };
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
        `INSERT INTO task_attempts (task_id, attempt, pool_slot, deadline_at, delivery) VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)`,
        [t.id, t.attempt, slot, job.timeout_seconds, delivery],
      );
      await tx.query(`INSERT INTO worker_slot_leases (dag_id, pool_name, slot, task_id) VALUES ($1, $2, $3, $4)`, [dag_id, pool.name, slot, t.id]);
      if (delivery === 'sqs') await tx.query(`INSERT INTO dispatch_queue (task_id, attempt) VALUES ($1, $2)`, [t.id, t.attempt]);
    }
    if (started.length && !lambda) await tx.query(`SELECT pg_notify('trace_dispatch', '')`);
    return { ids: started.map((t) => t.id), lambda };
  }
}
