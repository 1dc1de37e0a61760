import { HttpStatus, Injectable } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { DataSource, EntityManager } from 'typeorm';
import { sql, sqlOne } from '../../common/db';
import { notFound, TraceError, unauthorized } from '../../common/errors';
import { hashToken } from '../../common/identity';
import { SecretCipher } from '../../common/keys/secret-cipher';
import type { DagSpec } from '../../registry/dags/dag-spec';
import { ingestEvents, jobOutputs } from './event-ingest';
import type { EmittedEvent, EventRef, OutputRef, TaskPayload } from './task-payload';

export const ATTEMPT_TOKEN_PREFIX = 'tra_';

export type Outcome = 'succeeded' | 'failed' | 'canceled';

interface AttemptRow {
  task_id: string;
  attempt: number;
  finished_at: Date | null;
  task_attempt: number;
  task_status: string;
  cancel_requested: boolean;
  org_id: string;
  dag_id: string;
  job_name: string;
  spec: DagSpec;
}

const stale = (message: string) => new TraceError(HttpStatus.CONFLICT, 'stale_attempt', message);

/**
 * The attempt-gated side of the internal contract (docs/architecture/contracts.md):
 * fetching a task issues its attempt token once; events and completion are accepted only for
 * the task's current attempt; a late completion is accepted while no newer attempt has started
 * and the task is neither canceled nor completed.
 */
@Injectable()
export class AttemptsService {
  constructor(
    private readonly db: DataSource,
    private readonly cipher: SecretCipher,
  ) {}

  /**
   * For the wrapper holding `{task_id}`: binds the current attempt to this wrapper and returns the
   * payload with a fresh attempt token. A second fetch of the same attempt (a redelivered message)
   * is refused, so one attempt runs once.
   */
  async fetch(taskId: string, wrapperNode: string | undefined): Promise<TaskPayload> {
    return this.db.transaction(async (tx) => {
      const row = await sqlOne<{ attempt: number; status: string; cancel_requested: boolean; token_issued: boolean }>(
        tx,
        `SELECT t.attempt, t.status, t.cancel_requested, (a.token_hash IS NOT NULL) AS token_issued
           FROM tasks t LEFT JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt
          WHERE t.id = $1 FOR UPDATE OF t`,
        [taskId],
      );
      if (!row) throw notFound('task_not_found', `no task ${taskId}`);
      if (row.status !== 'running') throw stale(`task ${taskId} is ${row.status}; there is no attempt to run`);
      if (row.token_issued) throw stale(`attempt ${row.attempt} of task ${taskId} was already fetched by another wrapper`);
      const token = ATTEMPT_TOKEN_PREFIX + randomBytes(32).toString('base64url');
      await tx.query(`UPDATE task_attempts SET token_hash = $3, wrapper_node = $4 WHERE task_id = $1 AND attempt = $2`, [taskId, row.attempt, hashToken(token), wrapperNode ?? null]);
      return this.payload(tx, taskId, token);
    });
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
   * Completion, with optional final events stored in the same transaction. Accepted for the
   * current attempt even after the reaper timed it out, as long as no newer attempt has started
   * and the task is not canceled or completed.
   */
  async complete(token: string, outcome: Outcome, finalEvents: EmittedEvent[], error?: string): Promise<{ status: string; accepted: number }> {
    return this.db.transaction(async (tx) => {
      const a = await this.attemptFor(tx, token);
      if (a.task_attempt !== a.attempt) throw stale(`attempt ${a.attempt} of task ${a.task_id} was superseded by attempt ${a.task_attempt}`);
      if (!['running', 'queued'].includes(a.task_status)) throw stale(`task ${a.task_id} is already ${a.task_status}`);

      let accepted = 0;
      if (outcome === 'succeeded' && finalEvents.length) accepted = await ingestEvents(tx, await this.producer(tx, a), finalEvents);
      const retry = outcome === 'failed' && !a.cancel_requested && a.attempt < (await this.maxAttempts(tx, a.task_id));
      const status = retry ? 'queued' : a.cancel_requested && outcome !== 'succeeded' ? 'canceled' : outcome;
      await tx.query(
        `UPDATE tasks SET status = $2, updated_at = now(), error = $3,
                finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'canceled') THEN now() END,
                run_after = CASE WHEN $2 = 'queued' THEN now() + make_interval(secs => least(60, 2 ^ attempt)) ELSE run_after END
          WHERE id = $1`,
        [a.task_id, status, error ?? null],
      );
      await tx.query(
        `UPDATE task_attempts SET finished_at = coalesce(finished_at, now()), outcome = coalesce(outcome, $3), error = coalesce(error, $4)
          WHERE task_id = $1 AND attempt = $2`,
        [a.task_id, a.attempt, outcome, error ?? null],
      );
      await releaseSlot(tx, a.task_id);
      if (status === 'queued') await tx.query(`SELECT pg_notify('trace_tasks', '')`);
      return { status, accepted };
    });
  }

  /** For the wrapper's poll while an operator runs: is this still the live attempt, and is cancel requested? */
  async status(token: string): Promise<{ task_id: string; attempt: number; current: boolean; cancel_requested: boolean; task_status: string }> {
    return this.db.transaction(async (tx) => {
      const a = await this.attemptFor(tx, token);
      return { task_id: a.task_id, attempt: a.attempt, current: a.task_attempt === a.attempt && !a.finished_at, cancel_requested: a.cancel_requested, task_status: a.task_status };
    });
  }

  private async attemptFor(tx: EntityManager, token: string): Promise<AttemptRow> {
    if (!token.startsWith(ATTEMPT_TOKEN_PREFIX)) throw unauthorized('an attempt token (tra_...) is required on this endpoint');
    const row = await sqlOne<AttemptRow>(
      tx,
      `SELECT a.task_id, a.attempt, a.finished_at, t.attempt AS task_attempt, t.status AS task_status, t.cancel_requested,
              t.org_id, t.dag_id, t.job_name, v.spec
         FROM task_attempts a JOIN tasks t ON t.id = a.task_id JOIN dag_versions v ON v.id = t.dag_version_id
        WHERE a.token_hash = $1
        FOR UPDATE OF t`,
      [hashToken(token)],
    );
    if (!row) throw unauthorized('attempt token is unknown');
    return row;
  }

  private async producer(tx: EntityManager, a: AttemptRow) {
    return { taskId: a.task_id, attempt: a.attempt, orgId: a.org_id, dagId: a.dag_id, jobName: a.job_name, outputs: await jobOutputs(tx, a.dag_id, a.spec, a.job_name) };
  }

  private async maxAttempts(tx: EntityManager, taskId: string): Promise<number> {
    return (await sqlOne<{ max_attempts: number }>(tx, `SELECT max_attempts FROM tasks WHERE id = $1`, [taskId]))!.max_attempts;
  }

  /** The full payload; also what a Lambda is invoked with. */
  async payload(tx: EntityManager, taskId: string, token: string): Promise<TaskPayload> {
    const t = (await sqlOne<{
      id: string; attempt: number; status: string; cancel_requested: boolean; org_id: string; dag_id: string; dag_name: string; version: number;
      spec: DagSpec; job_name: string; event_id: string | null; input_index: number | null; deadline_at: Date; pool_slot: number | null;
    }>(
      tx,
      `SELECT t.id, t.attempt, t.status, t.cancel_requested, t.org_id, t.dag_id, g.name AS dag_name, v.number AS version, v.spec,
              t.job_name, t.event_id, t.input_index, a.deadline_at, a.pool_slot
         FROM tasks t JOIN dags g ON g.id = t.dag_id JOIN dag_versions v ON v.id = t.dag_version_id
         JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt
        WHERE t.id = $1`,
      [taskId],
    ))!;
    const job = t.spec.jobs.find((j) => j.name === t.job_name)!;
    const outputUuids = await jobOutputs(tx, t.dag_id, t.spec, t.job_name);
    const outputs: OutputRef[] = [];
    for (const [index, uuid] of outputUuids.entries()) {
      const o = await sqlOne<Omit<OutputRef, 'index'>>(
        tx,
        `SELECT d.dataset_uuid, p.dataset_version, v.location, d.backend, d.update_strategy, d.unique_key
           FROM datasets d LEFT JOIN dag_dataset_pointers p ON p.dag_id = $2 AND p.dataset_uuid = d.dataset_uuid
           LEFT JOIN dataset_versions v ON v.dataset_version = p.dataset_version
          WHERE d.dataset_uuid = $1`,
        [uuid, t.dag_id],
      );
      outputs.push({ index, ...o! });
    }
    const event = t.event_id
      ? await sqlOne<EventRef>(
          tx,
          `SELECT e.id::text, e.dataset_uuid, e.dataset_version, v.location, e.kind, e.partition_key,
                  e.range_start::text AS start, e.range_end::text AS "end", e.cursor, e.payload
             FROM events e JOIN dataset_versions v ON v.dataset_version = e.dataset_version WHERE e.id = $1`,
          [t.event_id],
        )
      : undefined;
    let slot: TaskPayload['slot'] = null;
    if (job.worker_pool && t.pool_slot !== null) {
      const spec = t.spec.worker_pools.find((p) => p.name === job.worker_pool)!.slots[t.pool_slot]!;
      const names = Object.values(spec.secret_env);
      const sealed = await sql<{ name: string; ciphertext: Buffer; iv: Buffer; auth_tag: Buffer; key_id: string }>(
        tx,
        `SELECT name, ciphertext, iv, auth_tag, key_id FROM secrets WHERE org_id = $1 AND name = ANY ($2)`,
        [t.org_id, names],
      );
      const values = new Map(sealed.map((s) => [s.name, this.cipher.open({ ciphertext: s.ciphertext, iv: s.iv, authTag: s.auth_tag, keyId: s.key_id }, `${t.org_id}/${s.name}`)]));
      const secretEnv: Record<string, string> = {};
      for (const [env, name] of Object.entries(spec.secret_env)) {
        const value = values.get(name);
        if (value === undefined) throw new TraceError(HttpStatus.CONFLICT, 'secret_missing', `secret "${name}" for ${env} was deleted after deploy`);
        secretEnv[env] = value;
      }
      slot = { pool: job.worker_pool, index: t.pool_slot, env: spec.env, secret_env: secretEnv };
    }
    return {
      status: t.cancel_requested ? 'Canceled' : 'Ready',
      task_id: t.id,
      attempt: t.attempt,
      attempt_token: token,
      deadline_at: t.deadline_at.toISOString(),
      org_id: t.org_id,
      dag: { name: t.dag_name, version: t.version },
      job: { name: job.name, operator: job.operator, language: job.language, entry_point: job.entry_point, runtime: job.runtime, config: job.config },
      input: event && t.input_index !== null ? { input_index: t.input_index, event } : null,
      outputs,
      idempotency: { producer_task_id: t.id, attempt: t.attempt },
      slot,
    };
  }
}

/** Every exit path of an attempt (completion, failure, timeout, cancel) releases its slot here. */
export async function releaseSlot(tx: EntityManager, taskId: string): Promise<void> {
  await tx.query(`DELETE FROM worker_slot_leases WHERE task_id = $1`, [taskId]);
}
