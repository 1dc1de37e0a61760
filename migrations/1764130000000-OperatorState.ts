import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Durable state of stateful operators (range_aggregator): one row per job and input dataset,
 * written only through the internal API with a compare-and-set on `version`, so concurrent tasks
 * of one job cannot both act on the same state (docs/architecture/operators/range_aggregator.md).
 */
export class OperatorState1764130000000 implements MigrationInterface {
  name = 'OperatorState1764130000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE operator_state (
        org_id              uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        dag_id              uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        job_name            text NOT NULL,
        input_dataset_uuid  uuid NOT NULL REFERENCES datasets (dataset_uuid) ON DELETE CASCADE,
        state               jsonb NOT NULL,
        version             integer NOT NULL,
        updated_by_task     uuid NOT NULL,
        updated_at          timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (dag_id, job_name, input_dataset_uuid)
      )`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE operator_state`);
  }
}
