import { HttpStatus, Injectable } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { DataSource, EntityManager } from 'typeorm';
import { sql, sqlOne, type Queryable } from '../../common/db';
import { notFound, TraceError, unauthorized } from '../../common/errors';
import { hashToken } from '../../common/identity';
import { SecretCipher } from '../../common/keys/secret-cipher';
import { ingestEvents } from './event-ingest';
import { outputKeys, SpecCache } from './spec-cache';
import type { EmittedEvent, EventRef, OutputRef, TaskPayload } from './task-payload';

export const ATTEMPT_TOKEN_PREFIX = 'tra_';

export type Outcome = 'succeeded' | 'failed' | 'canceled';

interface AttemptRow {
  task_id: string;
  attempt: number;
  finished_at: Date | null;
  prior_outcome: string | null;
  task_attempt: number;
  task_status: string;
  cancel_requested: boolean;
  org_id: string;
  dag_id: string;
  dag_version_id: string;
  job_name: string;
}

const stale = (message: string) => new TraceError(HttpStatus.CONFLICT, 'stale_attempt', message);

/**
 * The attempt-gated side of the internal contract (docs/architecture/contracts.md):
 * fetching a task issues its attempt token once; events are accepted only from the task's
 * current, unfinished attempt; a completion is accepted for the current attempt while no newer
 * attempt has started and the task is neither canceled nor completed — also after the reaper
 * timed it out — and only once.
 *
 * This is the task path's hot code: each call is one or two statements, no per-event or
 * per-output round trips (see docs/benchmarks.md).
 */
@Injectable()
export class AttemptsService {
  constructor(
    private readonly db: DataSource,
    private readonly cipher: SecretCipher,
    private readonly specs: SpecCache,
  ) {}

  /**
   * For the wrapper holding `{task_id}` (or the dispatcher invoking a Lambda): binds the current
   * attempt, issuing its token. A second fetch of the same attempt (a redelivered message) is
   * refused, so one attempt runs once.
   */
  async fetch(taskId: string, wrapperNode: string | undefined): Promise<TaskPayload> {
    // One transaction: if the payload cannot be built (a secret was deleted), the attempt stays unbound.
    return this.db.transaction((tx) => this.bindAndBuild(tx, taskId, wrapperNode));
  }

  private async bindAndBuild(tx: EntityManager, taskId: string, wrapperNode: string | undefined): Promise<TaskPayload> {
    const token = ATTEMPT_TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const bound = await sqlOne<{ status: string; attempt: number; bound: boolean }>(
      tx,
      `WITH t AS (SELECT id, attempt, status FROM tasks WHERE id = $1 FOR UPDATE),
            b AS (UPDATE task_attempts a SET token_hash = $2, wrapper_node = $3
                    FROM t WHERE a.task_id = t.id AND a.attempt = t.attempt AND t.status = 'running' AND a.token_hash IS NULL
                  RETURNING a.task_id, a.attempt),
            -- The attempt is bound: its outbox row (local transport) is spent with it.
            q AS (DELETE FROM dispatch_queue d USING b WHERE d.task_id = b.task_id AND d.attempt = b.attempt)
       SELECT t.status, t.attempt, EXISTS (SELECT 1 FROM b) AS bound FROM t`,
      [taskId, hashToken(token), wrapperNode ?? null],
    );
    if (!bound) throw notFound('task_not_found', `no task ${taskId}`);
    if (!bound.bound) {
      if (bound.status !== 'running') throw stale(`task ${taskId} is ${bound.status}; there is no attempt to run`);
      throw stale(`attempt ${bound.attempt} of task ${taskId} was already fetched by another wrapper`);
    }
    return this.payload(tx, taskId, token);
  }

  /** Mid-task events: accepted only from the current, unfinished attempt of a running task. */
  async emit(token: string, events: EmittedEvent[]): Promise<{ accepted: number; duplicates: number }> {
    return this.db.transaction(async (tx) => {
      const a = await this.attemptFor(tx, token);
      if (a.task_attempt !== a.attempt || a.finished_at || a.task_status !== 'running') {
        throw stale(`attempt ${a.attempt} of task ${a.task_id} is not the running attempt; its events are refused`);
      }
      const fresh = await ingestEvents(tx, await this.producer(tx, a), events);
      return { accepted: fresh, duplicates: events.length - fresh };
    });
  }

  /**
   * Completion, with optional final events stored in the same transaction. Without final events
   * it is a single statement.
   */
  async complete(token: string, outcome: Outcome, finalEvents: EmittedEvent[], error?: string): Promise<{ status: string; accepted: number }> {
    if (!token.startsWith(ATTEMPT_TOKEN_PREFIX)) throw unauthorized('an attempt token (tra_...) is required on this endpoint');
    if (outcome !== 'succeeded' || finalEvents.length === 0) return { ...(await this.finish(this.db, token, outcome, error)), accepted: 0 };
    return this.db.transaction(async (tx) => {
      const a = await this.attemptFor(tx, token);
      this.assertCompletable(a);
      const accepted = await ingestEvents(tx, await this.producer(tx, a), finalEvents);
      return { ...(await this.finish(tx, token, outcome, error)), accepted };
    });
  }

  /** For the wrapper's poll while an operator runs: may this attempt still complete, and is cancel requested? */
  async status(token: string): Promise<{ task_id: string; attempt: number; current: boolean; cancel_requested: boolean; task_status: string }> {
    const a = await this.attemptFor(this.db, token, false);
    return { task_id: a.task_id, attempt: a.attempt, current: completable(a), cancel_requested: a.cancel_requested, task_status: a.task_status };
  }

  /**
   * The gated state change, in one statement: the task moves on (queued for a retry, or its final
   * status), the attempt is closed, its slot released, and the metering loop woken.
   */
  private async finish(db: Queryable, token: string, outcome: Outcome, error: string | undefined): Promise<{ status: string }> {
    const row = await sqlOne<{ task_id: string; attempt: number; task_attempt: number; task_status: string; prior_outcome: string | null; new_status: string | null }>(
      db,
      `WITH a AS (
         SELECT a.task_id, a.attempt, a.outcome AS prior_outcome, t.attempt AS task_attempt, t.status AS task_status,
                t.cancel_requested, t.max_attempts
           FROM task_attempts a JOIN tasks t ON t.id = a.task_id
          WHERE a.token_hash = $1
          FOR UPDATE OF t
       ), d AS (
         SELECT a.*, CASE WHEN $2 = 'failed' AND NOT a.cancel_requested AND a.attempt < a.max_attempts THEN 'queued'
                          WHEN a.cancel_requested AND $2 <> 'succeeded' THEN 'canceled'
                          ELSE $2 END AS next
           FROM a
          WHERE a.task_attempt = a.attempt AND a.task_status IN ('running', 'queued') AND (a.prior_outcome IS NULL OR a.prior_outcome = 'timed_out')
       ), t AS (
         UPDATE tasks SET status = d.next, updated_at = now(), error = $3,
                finished_at = CASE WHEN d.next = 'queued' THEN NULL ELSE now() END,
                run_after = CASE WHEN d.next = 'queued' THEN now() + make_interval(secs => least(60, 2 ^ d.attempt)) ELSE tasks.run_after END
           FROM d WHERE tasks.id = d.task_id
         RETURNING tasks.status
       ), x AS (
         UPDATE task_attempts SET finished_at = coalesce(task_attempts.finished_at, now()),
                outcome = $2, -- a late completion replaces timed_out, so the attempt cannot complete twice
                error = coalesce(task_attempts.error, $3)
           FROM d WHERE task_attempts.task_id = d.task_id AND task_attempts.attempt = d.attempt
       ), l AS (
         DELETE FROM worker_slot_leases USING d WHERE worker_slot_leases.task_id = d.task_id
       )
       SELECT a.task_id, a.attempt, a.task_attempt, a.task_status, a.prior_outcome,
              (SELECT status FROM t) AS new_status, pg_notify('trace_tasks', '') IS NULL AS notified
         FROM a`,
      [hashToken(token), outcome, error ?? null],
    );
    if (!row) throw unauthorized('attempt token is unknown');
    if (row.new_status) return { status: row.new_status };
    if (row.task_attempt !== row.attempt) throw stale(`attempt ${row.attempt} of task ${row.task_id} was superseded by attempt ${row.task_attempt}`);
    if (!['running', 'queued'].includes(row.task_status)) throw stale(`task ${row.task_id} is already ${row.task_status}`);
    throw stale(`attempt ${row.attempt} of task ${row.task_id} already completed (${row.prior_outcome})`);
  }

  private assertCompletable(a: AttemptRow): void {
    if (a.task_attempt !== a.attempt) throw stale(`attempt ${a.attempt} of task ${a.task_id} was superseded by attempt ${a.task_attempt}`);
    if (!['running', 'queued'].includes(a.task_status)) throw stale(`task ${a.task_id} is already ${a.task_status}`);
    if (a.prior_outcome && a.prior_outcome !== 'timed_out') throw stale(`attempt ${a.attempt} of task ${a.task_id} already completed (${a.prior_outcome})`);
  }

  private async attemptFor(db: Queryable, token: string, lock = true): Promise<AttemptRow> {
    if (!token.startsWith(ATTEMPT_TOKEN_PREFIX)) throw unauthorized('an attempt token (tra_...) is required on this endpoint');
    const row = await sqlOne<AttemptRow>(
      db,
      `SELECT a.task_id, a.attempt, a.finished_at, a.outcome AS prior_outcome, t.attempt AS task_attempt, t.status AS task_status,
              t.cancel_requested, t.org_id, t.dag_id, t.dag_version_id, t.job_name
         FROM task_attempts a JOIN tasks t ON t.id = a.task_id
        WHERE a.token_hash = $1
        ${lock ? 'FOR UPDATE OF t' : ''}`,
      [hashToken(token)],
    );
    if (!row) throw unauthorized('attempt token is unknown');
    return row;
  }

  private async producer(tx: EntityManager, a: AttemptRow) {
    const spec = await this.specs.get(tx, a.dag_version_id);
    const keys = outputKeys(spec, a.job_name);
    const rows = await sql<{ key: string; dataset_uuid: string }>(
      tx,
      `SELECT job_name || '#' || output_index AS key, dataset_uuid FROM datasets WHERE dag_id = $1 AND job_name || '#' || output_index = ANY ($2)`,
      [a.dag_id, keys],
    );
    const byKey = new Map(rows.map((r) => [r.key, r.dataset_uuid]));
    return { taskId: a.task_id, attempt: a.attempt, orgId: a.org_id, dagId: a.dag_id, jobName: a.job_name, outputs: keys.map((k) => byKey.get(k) ?? '') };
  }

  /** The full payload in one query (plus secrets for a pool slot); also what a Lambda is invoked with. */
  async payload(db: Queryable, taskId: string, token: string): Promise<TaskPayload> {
    const t = (await sqlOne<{
      id: string; attempt: number; cancel_requested: boolean; org_id: string; dag_id: string; dag_name: string; version: number; version_id: string;
      job_name: string; input_index: number | null; deadline_at: Date; pool_slot: number | null; pool_name: string | null;
      event: EventRef | null; outputs: (Omit<OutputRef, 'index'> & { key: string })[];
    }>(
      db,
      `SELECT t.id, t.attempt, t.cancel_requested, t.org_id, t.dag_id, g.name AS dag_name, v.number AS version, v.id AS version_id,
              t.job_name, t.input_index, a.deadline_at, a.pool_slot,
              (SELECT l.pool_name FROM worker_slot_leases l WHERE l.task_id = t.id) AS pool_name,
              (SELECT row_to_json(ev) FROM (
                 SELECT e.id::text AS id, e.dataset_uuid, e.dataset_version, dv.location, e.kind, e.partition_key,
                        e.range_start::text AS start, e.range_end::text AS "end", e.cursor, e.payload
                   FROM events e JOIN dataset_versions dv ON dv.dataset_version = e.dataset_version WHERE e.id = t.event_id) ev) AS event,
              (SELECT coalesce(json_agg(json_build_object(
                         'key', d.job_name || '#' || d.output_index, 'dataset_uuid', d.dataset_uuid, 'dataset_version', p.dataset_version,
                         'location', dv.location, 'backend', d.backend, 'update_strategy', d.update_strategy, 'unique_key', d.unique_key)), '[]')
                 FROM datasets d
                 LEFT JOIN dag_dataset_pointers p ON p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid
                 LEFT JOIN dataset_versions dv ON dv.dataset_version = p.dataset_version
                WHERE d.dag_id = t.dag_id) AS outputs
         FROM tasks t JOIN dags g ON g.id = t.dag_id JOIN dag_versions v ON v.id = t.dag_version_id
         JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt
        WHERE t.id = $1`,
      [taskId],
    ))!;
    const spec = await this.specs.get(db, t.version_id);
    const job = spec.jobs.find((j) => j.name === t.job_name)!;
    const datasets = new Map(t.outputs.map((o) => [o.key, o]));
    const outputs: OutputRef[] = outputKeys(spec, t.job_name).map((key, index) => {
      const { key: _key, ...o } = datasets.get(key)!;
      return { index, ...o };
    });
    return {
      status: t.cancel_requested ? 'Canceled' : 'Ready',
      task_id: t.id,
      attempt: t.attempt,
      attempt_token: token,
      deadline_at: new Date(t.deadline_at).toISOString(),
      org_id: t.org_id,
      dag: { name: t.dag_name, version: t.version },
      job: { name: job.name, operator: job.operator, language: job.language, entry_point: job.entry_point, runtime: job.runtime, config: job.config },
      input: t.event && t.input_index !== null ? { input_index: t.input_index, event: t.event } : null,
      outputs,
      idempotency: { producer_task_id: t.id, attempt: t.attempt },
      slot: t.pool_name !== null && t.pool_slot !== null ? await this.slot(db, t.org_id, t.dag_id, t.pool_name, t.pool_slot) : null,
    };
  }

  /**
   * The leased slot's env and its secret_env values. The pool is read from the DAG's active
   * version, as metering leased it from there (execution-only edits apply at once).
   */
  private async slot(db: Queryable, orgId: string, dagId: string, poolName: string, index: number): Promise<TaskPayload['slot']> {
    const active = (await sqlOne<{ id: string }>(db, `SELECT active_version_id AS id FROM dags WHERE id = $1`, [dagId]))!;
    const pool = (await this.specs.get(db, active.id)).worker_pools.find((p) => p.name === poolName);
    const slot = pool?.slots[index];
    if (!slot) throw new TraceError(HttpStatus.CONFLICT, 'slot_gone', `worker pool "${poolName}" no longer has slot ${index}`);
    const names = Object.values(slot.secret_env);
    const sealed = await sql<{ name: string; ciphertext: Buffer; iv: Buffer; auth_tag: Buffer; key_id: string }>(
      db,
      `SELECT name, ciphertext, iv, auth_tag, key_id FROM secrets WHERE org_id = $1 AND name = ANY ($2)`,
      [orgId, names],
    );
    const values = new Map<string, string>();
    for (const s of sealed) {
      try {
        values.set(s.name, this.cipher.open({ ciphertext: s.ciphertext, iv: s.iv, authTag: s.auth_tag, keyId: s.key_id }, `${orgId}/${s.name}`));
      } catch (err) {
        throw new TraceError(HttpStatus.CONFLICT, 'secret_unreadable', `secret "${s.name}" cannot be decrypted with the configured key: ${(err as Error).message}`);
      }
    }
    const secretEnv: Record<string, string> = {};
    for (const [env, name] of Object.entries(slot.secret_env)) {
      const value = values.get(name);
      if (value === undefined) throw new TraceError(HttpStatus.CONFLICT, 'secret_missing', `secret "${name}" for ${env} was deleted after deploy`);
      secretEnv[env] = value;
    }
    return { pool: poolName, index, env: slot.env, secret_env: secretEnv };
  }
}

/** No newer attempt has started, the task is not canceled or completed, and this attempt has not completed. */
function completable(a: AttemptRow): boolean {
  return a.task_attempt === a.attempt && ['running', 'queued'].includes(a.task_status) && (a.prior_outcome === null || a.prior_outcome === 'timed_out');
}

/** Every exit path of an attempt (completion, failure, timeout, cancel) releases its slot here. */
export async function releaseSlot(tx: EntityManager, taskId: string): Promise<void> {
  await tx.query(`DELETE FROM worker_slot_leases WHERE task_id = $1`, [taskId]);
}
