import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Metering takes a job's queued tasks oldest first. The first index on queued tasks was keyed by
 * run_after, so every metering pass sorted the job's whole backlog to pick its next few tasks
 * (4 ms per pass at 20,000 queued, docs/benchmarks.md). Keyed by (created_at, id) the pass reads
 * only the rows it starts, and the same index lets metering find the jobs with queued work by a
 * skip scan instead of reading the backlog.
 */
export class QueuedTaskOrder1764120000000 implements MigrationInterface {
  name = 'QueuedTaskOrder1764120000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE INDEX tasks_queued_order_idx ON tasks (dag_id, job_name, created_at, id) WHERE status = 'queued'`);
    await q.query(`DROP INDEX tasks_queued_idx`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`CREATE INDEX tasks_queued_idx ON tasks (dag_id, job_name, run_after) WHERE status = 'queued'`);
    await q.query(`DROP INDEX tasks_queued_order_idx`);
  }
}
