import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The dispatcher's durable state: dataset events (stored once under their idempotency key),
 * tasks (one per event and consuming job), attempts (fenced by number and a per-attempt token),
 * worker-pool slot leases, and which jobs consume which datasets (ADR 0010, ADR 0011).
 */
export class EventsAndTasks1764110000000 implements MigrationInterface {
  name = 'EventsAndTasks1764110000000';

  async up(q: QueryRunner): Promise<void> {
    // Who consumes a dataset: rewritten for a DAG whenever a version of it becomes active.
    await q.query(`
      CREATE TABLE dataset_consumers (
        dataset_uuid    uuid NOT NULL REFERENCES datasets (dataset_uuid) ON DELETE CASCADE,
        dag_id          uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        job_name        text NOT NULL,
        input_index     integer NOT NULL,
        PRIMARY KEY (dataset_uuid, dag_id, job_name, input_index)
      )`);
    await q.query(`
      CREATE TABLE tasks (
        id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        org_id           uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        dag_id           uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        dag_version_id   uuid NOT NULL REFERENCES dag_versions (id),
        job_name         text NOT NULL,
        event_id         bigint,
        input_index      integer,
        status           text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
        attempt          integer NOT NULL DEFAULT 0,
        max_attempts     integer NOT NULL CHECK (max_attempts > 0),
        timeout_seconds  integer NOT NULL CHECK (timeout_seconds > 0),
        run_after        timestamptz NOT NULL DEFAULT now(),
        cancel_requested boolean NOT NULL DEFAULT false,
        created_by       uuid REFERENCES users (id),
        created_at       timestamptz NOT NULL DEFAULT now(),
        updated_at       timestamptz NOT NULL DEFAULT now(),
        finished_at      timestamptz,
        error            text
      )`);
    // 1 event → exactly 1 task per consuming job input, however often the event is delivered.
    await q.query(`CREATE UNIQUE INDEX tasks_event_consumer_key ON tasks (event_id, dag_id, job_name, input_index) WHERE event_id IS NOT NULL`);
    await q.query(`CREATE INDEX tasks_queued_idx ON tasks (dag_id, job_name, run_after) WHERE status = 'queued'`);
    await q.query(`CREATE INDEX tasks_running_idx ON tasks (dag_id, job_name) WHERE status = 'running'`);
    await q.query(`CREATE INDEX tasks_org_idx ON tasks (org_id, created_at DESC)`);
    await q.query(`
      CREATE TABLE events (
        id                bigserial PRIMARY KEY,
        org_id            uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        dataset_uuid      uuid NOT NULL REFERENCES datasets (dataset_uuid) ON DELETE CASCADE,
        dataset_version   uuid NOT NULL REFERENCES dataset_versions (dataset_version),
        kind              text NOT NULL CHECK (kind IN ('data', 'invalidation')),
        partition_key     text,
        range_start       bigint,
        range_end         bigint,
        cursor            text,
        producer_task_id  uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        producer_attempt  integer NOT NULL,
        idempotency_key   text NOT NULL UNIQUE,
        payload           jsonb NOT NULL DEFAULT '{}',
        created_at        timestamptz NOT NULL DEFAULT now(),
        CHECK ((range_start IS NULL) = (range_end IS NULL) AND (range_start IS NULL OR range_start <= range_end))
      )`);
    await q.query(`CREATE INDEX events_producer_idx ON events (producer_task_id)`);
    await q.query(`ALTER TABLE tasks ADD FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE`);
    await q.query(`
      CREATE TABLE task_attempts (
        task_id      uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        attempt      integer NOT NULL CHECK (attempt > 0),
        -- Issued when the attempt is first fetched (or invoked): a second fetch is refused.
        token_hash   bytea UNIQUE,
        wrapper_node uuid,
        pool_slot    integer,
        started_at   timestamptz NOT NULL DEFAULT now(),
        deadline_at  timestamptz NOT NULL,
        finished_at  timestamptz,
        outcome      text CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'canceled')),
        error        text,
        PRIMARY KEY (task_id, attempt)
      )`);
    await q.query(`CREATE INDEX task_attempts_open_idx ON task_attempts (deadline_at) WHERE finished_at IS NULL`);
    // One row per leased slot: a slot is held by at most one running task.
    await q.query(`
      CREATE TABLE worker_slot_leases (
        dag_id     uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        pool_name  text NOT NULL,
        slot       integer NOT NULL,
        task_id    uuid NOT NULL UNIQUE REFERENCES tasks (id) ON DELETE CASCADE,
        leased_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (dag_id, pool_name, slot)
      )`);

    // The local transport: started attempts waiting for a wrapper (the SQS queue's stand-in).
    await q.query(`
      CREATE TABLE dispatch_queue (
        task_id      uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        attempt      integer NOT NULL,
        enqueued_at  timestamptz NOT NULL DEFAULT now(),
        -- Local transport: a wrapper claims a row and deletes it once the attempt is fetched; a
        -- claim by a node that is gone, or older than the visibility timeout, is released.
        claimed_by   uuid,
        claimed_at   timestamptz,
        PRIMARY KEY (task_id, attempt)
      )`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE dispatch_queue`);
    await q.query(`DROP TABLE worker_slot_leases`);
    await q.query(`DROP TABLE task_attempts`);
    await q.query(`ALTER TABLE tasks DROP CONSTRAINT tasks_event_id_fkey`);
    await q.query(`DROP TABLE events`);
    await q.query(`DROP TABLE tasks`);
    await q.query(`DROP TABLE dataset_consumers`);
  }
}
