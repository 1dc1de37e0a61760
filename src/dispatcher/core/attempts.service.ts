import { HttpStatus, Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { prepared, sql, sqlOne, type Queryable } from '../../common/db';
import { notFound, TraceError, unauthorized } from '../../common/errors';
import { SecretCipher } from '../../common/keys/secret-cipher';
import { ingestEvents, WAL_FLUSH_SQL, type Producer } from './event-ingest';
import { INPUT_LOCATIONS_SQL, LINEAGE_MAX_DEPTH, PASS_THROUGH_OPERATORS } from './input-locations';
import { TraceConfig } from '../../config';
import { MeterSignal, type MeteredRow } from './meter-signal';
import { outputKeys, SpecCache } from './spec-cache';
import type { EmittedEvent, EventRef, OutputRef, TaskPayload } from './task-payload';
import { ATTEMPT_TOKEN_PREFIX, attemptSecrets, attemptToken, parseAttemptToken, type AttemptKey } from './attempt-token';

export { ATTEMPT_TOKEN_PREFIX } from './attempt-token';

export type Outcome = 'succeeded' | 'failed' | 'canceled';

export interface Completion {
  token: string;
  outcome: Outcome;
  events: EmittedEvent[];
  error?: string;
}

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
  /** dataset_uuid of every output of the task's DAG, by `job#index` (what its events are stored under). */
  dataset_keys: Record<string, string> | null;
}

/** What a payload is built from, read in the statement that binds the attempt (aliases t, g, v, a). */
interface PayloadRow {
  id: string; attempt: number; cancel_requested: boolean; org_id: string; dag_id: string; dag_name: string; version: number; version_id: string;
  job_name: string; input_index: number | null; deadline_at: Date | string; pool_slot: number | null; pool_name: string | null;
  event: EventRef | null; outputs: (Omit<OutputRef, 'index'> & { key: string })[];
}

const PAYLOAD_COLUMNS = `
  t.id, t.attempt, t.cancel_requested, t.org_id, t.dag_id, g.name AS dag_name, v.number AS version, v.id AS version_id,
  t.job_name, t.input_index, a.deadline_at, a.pool_slot,
  (SELECT l.pool_name FROM worker_slot_leases l WHERE l.task_id = t.id) AS pool_name,
  (SELECT row_to_json(ev) FROM (
     SELECT e.id::text AS id, e.dataset_uuid, e.dataset_version, dv.location, e.kind, e.partition_key,
            e.range_start::text AS start, e.range_end::text AS "end", e.cursor, e.payload
       FROM events e JOIN dataset_versions dv ON dv.dataset_version = e.dataset_version WHERE e.id = t.event_id) ev) AS event,
  (SELECT coalesce(json_agg(json_build_object(
             'key', d.job_name || '#' || d.output_index, 'dataset_uuid', d.dataset_uuid, 'dataset_version', p.dataset_version,
             'location', dv.location, 'backend', d.backend, 'update_strategy', d.update_strategy, 'unique_key', d.unique_key,
             'cursor', d.cursor_column)), '[]')
     FROM datasets d
     LEFT JOIN dag_dataset_pointers p ON p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid
     LEFT JOIN dataset_versions dv ON dv.dataset_version = p.dataset_version
    WHERE d.dag_id = t.dag_id) AS outputs`;

/**
 * The rows a payload joins to its task `t`, each by its key. The probes are LATERAL with LIMIT 1 so
 * that they stay index lookups per task in a cached generic plan, whatever the tables' sizes
 * were when the plan was made (a plan made on near-empty tables otherwise hash-joins full scans).
 */
const PAYLOAD_JOINS = `
  CROSS JOIN LATERAL (SELECT name FROM dags WHERE id = t.dag_id LIMIT 1) g
  CROSS JOIN LATERAL (SELECT id, number FROM dag_versions WHERE id = t.dag_version_id LIMIT 1) v`;

// The task path's hot statements, run as named statements with generic plans (prepared()).
// Exported for the test that checks their generic plans stay index lookups on empty tables.

/** The payload of the current attempts of tasks $1, as task-fetch reads it: for the test that trace_claim reads the same. */
export const PAYLOAD_READ_SQL = `SELECT ${PAYLOAD_COLUMNS}
   FROM tasks t ${PAYLOAD_JOINS}
   JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt
  WHERE t.id = ANY ($1::uuid[])`;

/**
 * Local transport: claim, bind and fetch up to $1 started attempts ($2: the hashes of their
 * tokens' secrets, $3: wrapper node). trace_claim (migration 1764170000000-ClaimInStatement) reads the same payload columns as
 * PAYLOAD_COLUMNS; the events statement calls it too, to answer a waiting claim. Its rows come
 * back as one JSON array, as in the events statement: one value to parse instead of sixteen
 * columns of every row.
 *
 * The claim's transaction commits without waiting for its WAL to reach disk (`synchronous_commit`
 * off for this transaction only; ADR 0014, "Claims commit asynchronously"): a claim is delivery
 * bookkeeping, and one lost in a Postgres crash only makes its attempts claimable again.
 */
export const TASK_CLAIM_SQL = `SELECT (SELECT coalesce(json_agg(c ORDER BY c.n), '[]') FROM trace_claim($1, $2, $3) c) AS claimed,
                                      set_config('synchronous_commit', 'off', true) AS commit_mode`;

/** Bind the current attempts of the tasks $1 with their tokens' secret hashes $2 for wrapper node $3; read their payloads. */
export const TASK_FETCH_SQL = `WITH x AS (SELECT * FROM unnest($1::uuid[], $2::bytea[]) AS x(task_id, token_hash)),
        t AS (SELECT t.* FROM x CROSS JOIN LATERAL (SELECT * FROM tasks WHERE id = x.task_id FOR UPDATE) t),
        b AS (UPDATE task_attempts a SET token_hash = x.token_hash, wrapper_node = $3
                FROM t JOIN x ON x.task_id = t.id
               WHERE a.task_id = t.id AND a.attempt = t.attempt AND t.status = 'running' AND a.token_hash IS NULL
              RETURNING a.task_id),
        -- The attempts are bound: their outbox rows (if any) are spent with them.
        q AS (DELETE FROM dispatch_queue d USING b, t WHERE d.task_id = b.task_id AND t.id = b.task_id AND d.attempt = t.attempt)
   SELECT t.status, b.task_id IS NOT NULL AS bound, ${PAYLOAD_COLUMNS}
     FROM t LEFT JOIN b ON b.task_id = t.id ${PAYLOAD_JOINS}
     LEFT JOIN LATERAL (SELECT deadline_at, pool_slot FROM task_attempts WHERE task_id = t.id AND attempt = t.attempt LIMIT 1) a ON true`;

/** Completions ($6 task ids, $7 attempts, $1 their tokens' secret hashes, $2 outcomes, $3 errors), NOTIFY if $4, metering with transport $5: the gated state change. */
export const TASK_FINISH_SQL = `WITH x AS (
     SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $6::uuid[], $7::int[]) AS x(token_hash, outcome, error, task_id, attempt)
   ), a AS (
     SELECT x.token_hash, x.outcome, x.error, a.task_id, a.attempt, a.outcome AS prior_outcome, t.attempt AS task_attempt,
            t.status AS task_status, t.cancel_requested, t.max_attempts, t.dag_id, t.job_name
       FROM x
       -- The attempt the token names, if its secret is the one issued for it.
       CROSS JOIN LATERAL (SELECT * FROM task_attempts WHERE task_id = x.task_id AND attempt = x.attempt AND token_hash = x.token_hash LIMIT 1) a
       CROSS JOIN LATERAL (SELECT * FROM tasks WHERE id = a.task_id LIMIT 1) t
      ORDER BY t.id
      FOR UPDATE OF t
   ), d AS (
     SELECT a.*, CASE WHEN a.outcome = 'failed' AND NOT a.cancel_requested AND a.attempt < a.max_attempts THEN 'queued'
                      WHEN a.cancel_requested AND a.outcome <> 'succeeded' THEN 'canceled'
                      ELSE a.outcome END AS next
       FROM a
      WHERE a.task_attempt = a.attempt AND a.task_status IN ('running', 'queued') AND (a.prior_outcome IS NULL OR a.prior_outcome = 'timed_out')
   ), t AS (
     UPDATE tasks SET status = d.next, updated_at = now(), error = d.error,
            finished_at = CASE WHEN d.next = 'queued' THEN NULL ELSE now() END,
            run_after = CASE WHEN d.next = 'queued' THEN now() + make_interval(secs => least(60, 2 ^ d.attempt)) ELSE tasks.run_after END
       FROM d WHERE tasks.id = d.task_id
     RETURNING tasks.id, tasks.status
   ), u AS (
     UPDATE task_attempts SET finished_at = coalesce(task_attempts.finished_at, now()),
            outcome = d.outcome, -- a late completion replaces timed_out, so the attempt cannot complete twice
            error = coalesce(task_attempts.error, d.error)
       FROM d WHERE task_attempts.task_id = d.task_id AND task_attempts.attempt = d.attempt
   ), l AS (
     DELETE FROM worker_slot_leases USING d WHERE worker_slot_leases.task_id = d.task_id
   ), n AS (
     SELECT pg_notify('trace_tasks', k) FROM (SELECT DISTINCT d.dag_id || ' ' || d.job_name AS k FROM d) j WHERE $4
   ), m AS (
     -- With $5 (the transport), start the jobs' next tasks here: trace_meter_jobs runs after \`t\`
     -- (its argument reads t's rows), so its count of running tasks sees these ones finished;
     -- from each job's queue head (p_from_head). It waits for the job's lock (p_wait): leaving a
     -- locked job to the loop shortened completions but did not raise throughput (ADR 0012).
     SELECT * FROM trace_meter_jobs(
       (SELECT coalesce(jsonb_agg(jsonb_build_object('dag_id', j.dag_id, 'job_name', j.job_name)), '[]')
          FROM (SELECT DISTINCT d.dag_id, d.job_name FROM t JOIN d ON d.task_id = t.id) j
          LEFT JOIN job_queue_heads h ON h.dag_id = j.dag_id AND h.job_name = j.job_name
         -- Only jobs with queued work: metering one without any would only queue for its lock.
         -- An events statement that queues work meanwhile and finds the job full has the
         -- metering loop look again after it commits (EVENT_INGEST_SQL, "full"). One probe per
         -- job, ordered as tasks_queued_order_idx with LIMIT 1 so that it stops at the first row
         -- (an EXISTS was planned as a bitmap of the job's whole backlog), and from the job's
         -- queue head, as the metering below (p_from_head): the index's entries before it are
         -- the started tasks' dead ones (migration 1764190000000-QueueHeads).
         WHERE (SELECT true FROM tasks q WHERE q.dag_id = j.dag_id AND q.job_name = j.job_name AND q.status = 'queued'
                   AND (q.created_at, q.id) > (coalesce(h.created_at, '-infinity'), coalesce(h.task_id, '00000000-0000-0000-0000-000000000000'))
                 ORDER BY q.created_at, q.id LIMIT 1)),
       $5::text, true, true)
      WHERE $5::text IS NOT NULL
   )
   SELECT a.token_hash, a.task_id, a.attempt, a.task_attempt, a.task_status, a.prior_outcome, a.dag_id, a.job_name,
          (SELECT t.status FROM t WHERE t.id = a.task_id) AS new_status, (SELECT count(*) FROM n) AS notified,
          (SELECT coalesce(json_agg(m), '[]') FROM m) AS metered
     FROM a`;

/** The attempt an attempt token names ($1 task, $2 attempt) if $3 is its secret's hash, with its task (locked if `lock`) and its DAG's datasets. */
export const attemptSql = (lock: boolean) => `
  SELECT a.task_id, a.attempt, a.finished_at, a.outcome AS prior_outcome, t.attempt AS task_attempt, t.status AS task_status,
         t.cancel_requested, t.org_id, t.dag_id, t.dag_version_id, t.job_name,
         (SELECT json_object_agg(d.job_name || '#' || d.output_index, d.dataset_uuid) FROM datasets d WHERE d.dag_id = t.dag_id) AS dataset_keys
    FROM task_attempts a JOIN tasks t ON t.id = a.task_id
   WHERE a.task_id = $1 AND a.attempt = $2 AND a.token_hash = $3
   ${lock ? 'FOR UPDATE OF t' : ''}`;

const stale = (message: string) => new TraceError(HttpStatus.CONFLICT, 'stale_attempt', message);

/** The attempt a token names; 401 when it is not an attempt token, or not one of this form. */
const attemptKey = (token: string): AttemptKey => {
  const key = parseAttemptToken(token);
  if (!key) throw unauthorized(token.startsWith(ATTEMPT_TOKEN_PREFIX) ? 'attempt token is unknown' : 'an attempt token (tra_...) is required on this endpoint');
  return key;
};

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
  /** The producer of each attempt that has posted events, by attempt token (a bounded cache; see emit). */
  private readonly producers = new Map<string, Producer>();

  constructor(
    private readonly db: DataSource,
    private readonly cipher: SecretCipher,
    private readonly specs: SpecCache,
    private readonly meter: MeterSignal,
    private readonly config: TraceConfig,
  ) {}

  /**
   * For the wrapper holding `{task_id}` (or the dispatcher invoking a Lambda): binds the current
   * attempt, issuing its token. A second fetch of the same attempt (a redelivered message) is
   * refused, so one attempt runs once.
   */
  async fetch(taskId: string, wrapperNode: string | undefined): Promise<TaskPayload> {
    const [result] = await this.fetchMany([taskId], wrapperNode);
    if ('error' in result!) throw result.error;
    return result!;
  }

  /**
   * Binds several attempts at once (a wrapper that received several messages) in one statement,
   * whatever the count: lock the tasks, bind the current attempt of each running one not yet
   * fetched, spend its outbox row, and read what its payload needs. A task that cannot be bound
   * (not running, already fetched) gets its error in its place; the others are not held back.
   */
  async fetchMany(taskIds: string[], wrapperNode: string | undefined): Promise<({ error: TraceError; task_id: string } | TaskPayload)[]> {
    // Sorted: tasks are locked in id order, as the completion locks them, so the two cannot deadlock.
    const ids = [...new Set(taskIds)].sort();
    const { secrets, hashes } = attemptSecrets(ids.length);
    const rows = await prepared<PayloadRow & { status: string; bound: boolean }>(this.db, 'trace_task_fetch', TASK_FETCH_SQL, [ids, hashes, wrapperNode ?? null]);
    const byId = new Map<string, { error: TraceError; task_id: string } | TaskPayload>();
    for (const id of ids) byId.set(id, { task_id: id, error: notFound('task_not_found', `no task ${id}`) });
    for (const row of rows) {
      if (!row.bound) {
        const error = row.status !== 'running' ? stale(`task ${row.id} is ${row.status}; there is no attempt to run`) : stale(`attempt ${row.attempt} of task ${row.id} was already fetched by another wrapper`);
        byId.set(row.id, { task_id: row.id, error });
        continue;
      }
      const payload = await this.buildPayload(this.db, row);
      if (payload instanceof TraceError) {
        // The payload cannot be built (a secret was deleted): the attempt goes back to unbound, as
        // if never fetched; the reaper retries it at its deadline.
        await this.db.query(`UPDATE task_attempts SET token_hash = NULL, wrapper_node = NULL WHERE task_id = $1 AND attempt = $2`, [row.id, row.attempt]);
        byId.set(row.id, { task_id: row.id, error: payload });
        continue;
      }
      byId.set(row.id, { ...payload, attempt_token: attemptToken(row.id, row.attempt, secrets[ids.indexOf(row.id)]!) });
    }
    return taskIds.map((id) => byId.get(id)!);
  }

  /**
   * The local transport's receive (POST /internal/task-claim): takes up to `max` of the oldest
   * started attempts no wrapper holds yet (SKIP LOCKED, so concurrent wrappers never share one),
   * binds them to this wrapper with fresh attempt tokens and returns their payloads — claim and
   * task-fetch in one statement. An attempt whose payload cannot be built (a secret deleted after
   * deploy) is completed as failed at once, with the reason, and retried like any failure.
   */
  async claim(max: number, wrapperNode: string | undefined): Promise<TaskPayload[]> {
    const { secrets, hashes } = attemptSecrets(max);
    const [{ claimed }] = await prepared<{ claimed: (PayloadRow & { n: number })[] }>(this.db, 'trace_task_claim', TASK_CLAIM_SQL, [max, hashes, wrapperNode ?? null]);
    return this.claimed(claimed, secrets);
  }

  /** Payloads of claimed attempts (rows of trace_claim, `n` the position of each one's secret). */
  private async claimed(rows: (PayloadRow & { n: string | number })[], secrets: Buffer[]): Promise<TaskPayload[]> {
    const payloads: TaskPayload[] = [];
    const unbuildable: Pick<Completion, 'token' | 'outcome' | 'error'>[] = [];
    for (const row of rows) {
      const token = attemptToken(row.id, row.attempt, secrets[Number(row.n) - 1]!);
      const payload = await this.buildPayload(this.db, row);
      if (payload instanceof TraceError) unbuildable.push({ token, outcome: 'failed', error: `the task could not be prepared: ${payload.message}` });
      else payloads.push({ ...payload, attempt_token: token });
    }
    if (unbuildable.length) this.meter.metered((await this.finish(this.db, unbuildable)).metered);
    return payloads;
  }

  /**
   * Mid-task events: accepted only from the current, unfinished attempt of a running task. With
   * `serve` (a waiting claim: how many attempts it takes, for which wrapper node), the statement
   * that stores them also claims attempts for it once it has started the new tasks (trace_claim),
   * and their payloads come back in `served` as soon as the statement has committed — before its
   * WAL is on disk (ADR 0019). The events are durable once `durable` resolves: only then may the
   * producer be told they are accepted.
   */
  async emit(token: string, events: EmittedEvent[], serve?: { max: number; node: string | undefined }): Promise<{ accepted: number; duplicates: number; served: TaskPayload[]; durable: Promise<void> }> {
    const { hash } = attemptKey(token);
    // Who the attempt produces for is fixed for its life: looked up once, then the call is one
    // statement that gates on the attempt (locking its task) and stores the events.
    let producer = this.producers.get(token);
    if (!producer) {
      const a = await this.attemptFor(this.db, token, false);
      if (!this.isRunning(a)) throw stale(`attempt ${a.attempt} of task ${a.task_id} is not the running attempt; its events are refused`);
      producer = await this.producer(this.db, a);
      if (this.producers.size >= 10_000) this.producers.clear();
      this.producers.set(token, producer);
    }
    const fresh = serve && this.meter.inProcess ? attemptSecrets(serve.max) : undefined;
    const claim = fresh ? { hashes: fresh.hashes, node: serve!.node ?? null } : null;
    const { fresh: accepted, current, metered, full, claimed } = await ingestEvents<PayloadRow & { n: number }>(this.db, producer, events, !this.meter.inProcess, hash, this.meterWith(), claim);
    if (!current) {
      this.producers.delete(token);
      throw stale(`attempt ${producer.attempt} of task ${producer.taskId} is not the running attempt; its events are refused`);
    }
    const served = await this.claimed(claimed, fresh?.secrets ?? []);
    this.meter.metered(metered, served.length);
    this.meter.wake(full);
    // With a claim the statement committed asynchronously (EVENT_INGEST_SQL): flushed here.
    const durable = claim ? prepared(this.db, 'trace_wal_flush', WAL_FLUSH_SQL).then(() => undefined) : Promise.resolve();
    return { accepted, duplicates: events.length - accepted, served, durable };
  }

  /**
   * Completion, with optional final events stored in the same transaction. Without final events
   * it is a single statement.
   */
  async complete(token: string, outcome: Outcome, finalEvents: EmittedEvent[], error?: string): Promise<{ status: string; accepted: number }> {
    attemptKey(token);
    if (outcome !== 'succeeded' || finalEvents.length === 0) {
      const { results: [result], metered } = await this.finish(this.db, [{ token, outcome, error }]);
      this.meter.metered(metered);
      if (result instanceof TraceError) throw result;
      return { ...result!, accepted: 0 };
    }
    const { result, jobs, metered } = await this.db.transaction(async (tx) => {
      const a = await this.attemptFor(tx, token);
      this.assertCompletable(a);
      // The consumers of the final events are metered by the loop once this commits: metering
      // them here too would take a second job lock in this transaction, in no fixed order.
      const ingested = await ingestEvents(tx, await this.producer(tx, a), finalEvents, !this.meter.inProcess);
      this.producers.delete(token);
      const finished = await this.finish(tx, [{ token, outcome, error }]);
      const [done] = finished.results;
      if (done instanceof TraceError) throw done;
      return { result: { ...done!, accepted: ingested.fresh }, jobs: ingested.jobs, metered: finished.metered };
    });
    this.meter.wake(jobs);
    this.meter.metered(metered);
    return result;
  }

  /**
   * Several completions at once (a wrapper whose operators finished together). Completions
   * without final events share one statement; each one with final events gets its own
   * transaction, so events and completion stay atomic per task. Each result stands in its place.
   */
  async completeMany(items: Completion[]): Promise<({ status: string; accepted: number } | { error: TraceError })[]> {
    const results: ({ status: string; accepted: number } | { error: TraceError })[] = new Array(items.length);
    const plain: number[] = [];
    for (const [i, c] of items.entries()) {
      if (!c.token.startsWith(ATTEMPT_TOKEN_PREFIX)) results[i] = { error: unauthorized('an attempt token (tra_...) is required for each completion') };
      else if (!parseAttemptToken(c.token)) results[i] = { error: unauthorized('attempt token is unknown') };
      else if (c.outcome !== 'succeeded' || c.events.length === 0) plain.push(i);
    }
    const { results: finished, metered } = await this.finish(this.db, plain.map((i) => items[i]!));
    this.meter.metered(metered);
    plain.forEach((i, k) => {
      const r = finished[k]!;
      results[i] = r instanceof TraceError ? { error: r } : { ...r, accepted: 0 };
    });
    for (const [i, c] of items.entries()) {
      if (results[i]) continue;
      try {
        results[i] = await this.complete(c.token, c.outcome, c.events, c.error);
      } catch (err) {
        if (!(err instanceof TraceError)) throw err;
        results[i] = { error: err };
      }
    }
    return results;
  }

  /**
   * The operator state of the attempt's job for the dataset of its input event (stateful built-in
   * operators). Readable by the task's current, unfinished attempt only.
   */
  async readState(token: string): Promise<{ state: unknown; version: number }> {
    const a = await this.attemptFor(this.db, token, false);
    this.assertRunning(a);
    const key = await this.stateKey(this.db, a);
    const row = await sqlOne<{ state: unknown; version: number }>(
      this.db,
      `SELECT state, version FROM operator_state WHERE dag_id = $1 AND job_name = $2 AND input_dataset_uuid = $3`,
      [a.dag_id, a.job_name, key],
    );
    return row ?? { state: null, version: 0 };
  }

  /**
   * Compare-and-set: the state is written only if its version is still `expected` (0: none yet),
   * else 409 state_conflict and the caller reads again. Only the task's current, unfinished attempt writes.
   */
  async writeState(token: string, expected: number, state: unknown): Promise<{ version: number }> {
    return this.db.transaction(async (tx) => {
      const a = await this.attemptFor(tx, token);
      this.assertRunning(a);
      const key = await this.stateKey(tx, a);
      const written = await sqlOne<{ version: number }>(
        tx,
        expected === 0
          ? `INSERT INTO operator_state (org_id, dag_id, job_name, input_dataset_uuid, state, version, updated_by_task)
             VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT DO NOTHING RETURNING version`
          : `UPDATE operator_state SET state = $5, version = version + 1, updated_by_task = $6, updated_at = now()
              WHERE org_id = $1 AND dag_id = $2 AND job_name = $3 AND input_dataset_uuid = $4 AND version = $7 RETURNING version`,
        expected === 0 ? [a.org_id, a.dag_id, a.job_name, key, JSON.stringify(state), a.task_id] : [a.org_id, a.dag_id, a.job_name, key, JSON.stringify(state), a.task_id, expected],
      );
      if (!written) throw new TraceError(HttpStatus.CONFLICT, 'state_conflict', `the operator state changed since version ${expected}; read it again`);
      return written;
    });
  }

  /**
   * Where the files of the attempt's input event may lie (built-in operators reading or passing
   * on files): the locations of the event's dataset and of its pass-through lineage
   * (INPUT_LOCATIONS_SQL). Readable by the task's current, unfinished attempt only.
   */
  async inputLocations(token: string): Promise<{ locations: string[] }> {
    const a = await this.attemptFor(this.db, token, false);
    this.assertRunning(a);
    await this.stateKey(this.db, a); // 409 no_input_event for a task without one
    const rows = await sql<{ location: string }>(this.db, INPUT_LOCATIONS_SQL, [a.task_id, a.org_id, PASS_THROUGH_OPERATORS, LINEAGE_MAX_DEPTH]);
    return { locations: rows.map((r) => r.location) };
  }

  private isRunning(a: AttemptRow): boolean {
    return a.task_attempt === a.attempt && !a.finished_at && a.task_status === 'running';
  }

  private assertRunning(a: AttemptRow): void {
    if (!this.isRunning(a)) {
      throw stale(`attempt ${a.attempt} of task ${a.task_id} is not the running attempt`);
    }
  }

  /** State is kept per job and per input dataset: the dataset of the task's input event. */
  private async stateKey(db: Queryable, a: AttemptRow): Promise<string> {
    const row = await sqlOne<{ dataset_uuid: string }>(db, `SELECT e.dataset_uuid FROM tasks t JOIN events e ON e.id = t.event_id WHERE t.id = $1`, [a.task_id]);
    if (!row) throw new TraceError(HttpStatus.CONFLICT, 'no_input_event', `task ${a.task_id} has no input event; operator state is kept per input dataset`);
    return row.dataset_uuid;
  }

  /** For the wrapper's poll while an operator runs: may this attempt still complete, and is cancel requested? */
  async status(token: string): Promise<{ task_id: string; attempt: number; current: boolean; cancel_requested: boolean; task_status: string }> {
    const a = await this.attemptFor(this.db, token, false);
    return { task_id: a.task_id, attempt: a.attempt, current: completable(a), cancel_requested: a.cancel_requested, task_status: a.task_status };
  }

  /**
   * The gated state change, in one statement for any number of attempts: each task moves on
   * (queued for a retry, or its final status), its attempt is closed, its slot released, and the
   * jobs with room again are metered in the same statement when this process meters (their
   * next tasks start; `metered`, for MeterSignal.metered once the caller's transaction commits),
   * or told with NOTIFY trace_tasks when it does not.
   */
  private async finish(db: Queryable, items: Pick<Completion, 'token' | 'outcome' | 'error'>[]): Promise<{ results: ({ status: string } | TraceError)[]; metered: MeteredRow[] }> {
    if (items.length === 0) return { results: [], metered: [] };
    const keys = items.map((c) => parseAttemptToken(c.token));
    for (const c of items) this.producers.delete(c.token); // a completed attempt posts no more events
    const known = items.flatMap((c, i) => (keys[i] ? [{ ...c, key: keys[i] }] : []));
    const rows = await prepared<{ token_hash: Buffer; task_id: string; attempt: number; task_attempt: number; task_status: string; prior_outcome: string | null; new_status: string | null; metered: MeteredRow[] }>(
      db,
      'trace_task_finish',
      TASK_FINISH_SQL,
      [
        known.map((c) => c.key.hash),
        known.map((c) => c.outcome),
        known.map((c) => c.error ?? null),
        !this.meter.inProcess,
        this.meterWith(),
        known.map((c) => c.key.taskId),
        known.map((c) => c.key.attempt),
      ],
    );
    const byHash = new Map(rows.map((r) => [r.token_hash.toString('hex'), r]));
    const results = keys.map((k) => {
      const row = k && byHash.get(k.hash.toString('hex'));
      if (!row) return unauthorized('attempt token is unknown');
      if (row.new_status) return { status: row.new_status };
      if (row.task_attempt !== row.attempt) return stale(`attempt ${row.attempt} of task ${row.task_id} was superseded by attempt ${row.task_attempt}`);
      if (!['running', 'queued'].includes(row.task_status)) return stale(`task ${row.task_id} is already ${row.task_status}`);
      return stale(`attempt ${row.attempt} of task ${row.task_id} already completed (${row.prior_outcome})`);
    });
    return { results, metered: rows[0]?.metered ?? [] };
  }

  /** The transport to meter with inside the task path's statements, when this process meters (MeterSignal). */
  private meterWith(): string | null {
    return this.meter.inProcess ? this.config.dispatch.transport : null;
  }

  private assertCompletable(a: AttemptRow): void {
    if (a.task_attempt !== a.attempt) throw stale(`attempt ${a.attempt} of task ${a.task_id} was superseded by attempt ${a.task_attempt}`);
    if (!['running', 'queued'].includes(a.task_status)) throw stale(`task ${a.task_id} is already ${a.task_status}`);
    if (a.prior_outcome && a.prior_outcome !== 'timed_out') throw stale(`attempt ${a.attempt} of task ${a.task_id} already completed (${a.prior_outcome})`);
  }

  private async attemptFor(db: Queryable, token: string, lock = true): Promise<AttemptRow> {
    const key = attemptKey(token);
    const [row] = await prepared<AttemptRow>(db, lock ? 'trace_attempt_locked' : 'trace_attempt', attemptSql(lock), [key.taskId, key.attempt, key.hash]);
    if (!row) throw unauthorized('attempt token is unknown');
    return row;
  }

  /** Who produces the attempt's events: its task, and each of its job's outputs as the dataset it writes. */
  private async producer(db: Queryable, a: AttemptRow): Promise<Producer> {
    const keys = outputKeys(await this.specs.get(db, a.dag_version_id), a.job_name);
    return { taskId: a.task_id, attempt: a.attempt, orgId: a.org_id, dagId: a.dag_id, jobName: a.job_name, outputs: keys.map((k) => a.dataset_keys?.[k] ?? '') };
  }

  /** A payload (without the attempt token) from its row: the job from the cached spec, secrets for a pool slot. */
  private async buildPayload(db: Queryable, t: PayloadRow): Promise<Omit<TaskPayload, 'attempt_token'> | TraceError> {
    const spec = await this.specs.get(db, t.version_id);
    const job = spec.jobs.find((j) => j.name === t.job_name)!;
    const datasets = new Map(t.outputs.map((o) => [o.key, o]));
    const outputs: OutputRef[] = outputKeys(spec, t.job_name).map((key, index) => {
      const { key: _key, ...o } = datasets.get(key)!;
      return { index, ...o };
    });
    let slot: TaskPayload['slot'] = null;
    if (t.pool_name !== null && t.pool_slot !== null) {
      try {
        slot = await this.slot(db, t.org_id, t.dag_id, t.pool_name, t.pool_slot);
      } catch (err) {
        if (err instanceof TraceError) return err;
        throw err;
      }
    }
    return {
      status: t.cancel_requested ? 'Canceled' : 'Ready',
      task_id: t.id,
      attempt: t.attempt,
      deadline_at: new Date(t.deadline_at).toISOString(),
      org_id: t.org_id,
      dag: { name: t.dag_name, version: t.version },
      job: { name: job.name, operator: job.operator, language: job.language, entry_point: job.entry_point, runtime: job.runtime, config: job.config },
      input: t.event && t.input_index !== null ? { input_index: t.input_index, event: t.event } : null,
      outputs,
      idempotency: { producer_task_id: t.id, attempt: t.attempt },
      slot,
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
