import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Batch queries of the Query Service: submitted, pinned at submission, run in the background by
 * the process that accepted them (`node_id`), their full result written to the object store.
 */
export class QueryRuns1764140000000 implements MigrationInterface {
  name = 'QueryRuns1764140000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE query_runs (
        id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        org_id       uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        sql          text NOT NULL,
        pinned       jsonb NOT NULL,
        status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        node_id      uuid NOT NULL,
        result_key   text,
        row_count    bigint,
        error        text,
        created_at   timestamptz NOT NULL DEFAULT now(),
        finished_at  timestamptz
      )`);
    await q.query(`CREATE INDEX query_runs_user_idx ON query_runs (user_id, created_at DESC)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE query_runs`);
  }
}
