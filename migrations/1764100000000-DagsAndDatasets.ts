import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * DAGs and their immutable versions, who may deploy them, the dataset registry with its
 * versions and each DAG's pointer set, and write-only secrets (ADR 0005, ADR 0008).
 */
export class DagsAndDatasets1764100000000 implements MigrationInterface {
  name = 'DagsAndDatasets1764100000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE dags (
        id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        org_id             uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        name               text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
        active_version_id  uuid,
        created_by         uuid NOT NULL REFERENCES users (id),
        created_at         timestamptz NOT NULL DEFAULT now(),
        UNIQUE (org_id, name)
      )`);
    await q.query(`
      CREATE TABLE dag_versions (
        id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        dag_id      uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        number      integer NOT NULL CHECK (number > 0),
        spec        jsonb NOT NULL,
        spec_text   text NOT NULL,
        spec_hash   text NOT NULL,
        plan        jsonb NOT NULL,
        status      text NOT NULL CHECK (status IN ('active', 'pending', 'superseded')),
        author_id   uuid NOT NULL REFERENCES users (id),
        created_at  timestamptz NOT NULL DEFAULT now(),
        UNIQUE (dag_id, number)
      )`);
    await q.query(`ALTER TABLE dags ADD FOREIGN KEY (active_version_id) REFERENCES dag_versions (id) DEFERRABLE INITIALLY DEFERRED`);
    await q.query(`
      CREATE TABLE dag_grants (
        dag_id      uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        permission  text NOT NULL CHECK (permission IN ('deploy', 'trigger')),
        granted_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (dag_id, user_id, permission)
      )`);
    await q.query(`
      CREATE TABLE datasets (
        dataset_uuid     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        org_id           uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        dataset_name     text CHECK (dataset_name ~ '^[a-z][a-z0-9_]{0,127}$'),
        dag_id           uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        job_name         text NOT NULL,
        output_index     integer NOT NULL CHECK (output_index >= 0),
        backend          text NOT NULL CHECK (backend IN ('postgres', 's3')),
        update_strategy  text NOT NULL CHECK (update_strategy IN ('replace', 'append')),
        unique_key       text[],
        cursor_column    text,
        partitioning     text NOT NULL DEFAULT 'none' CHECK (partitioning IN ('none', 'range', 'key')),
        partition_key    text,
        buffered         boolean NOT NULL DEFAULT false,
        read_roles       text[] NOT NULL DEFAULT '{}',
        created_at       timestamptz NOT NULL DEFAULT now(),
        UNIQUE (dag_id, job_name, output_index)
      )`);
    // One name per org, held by one dataset at a time; unpublished datasets have none.
    await q.query(`CREATE UNIQUE INDEX datasets_org_name_key ON datasets (org_id, dataset_name) WHERE dataset_name IS NOT NULL`);
    await q.query(`
      CREATE TABLE dataset_versions (
        dataset_version  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        dataset_uuid     uuid NOT NULL REFERENCES datasets (dataset_uuid) ON DELETE CASCADE,
        dag_version_id   uuid NOT NULL REFERENCES dag_versions (id) ON DELETE CASCADE,
        status           text NOT NULL CHECK (status IN ('building', 'ready', 'purged')),
        location         text NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`CREATE INDEX dataset_versions_dataset_idx ON dataset_versions (dataset_uuid, created_at)`);
    // The DAG's pointer set: which version of each of its datasets is current. Swapped in one transaction.
    await q.query(`
      CREATE TABLE dag_dataset_pointers (
        dag_id           uuid NOT NULL REFERENCES dags (id) ON DELETE CASCADE,
        dataset_uuid     uuid NOT NULL REFERENCES datasets (dataset_uuid) ON DELETE CASCADE,
        dataset_version  uuid NOT NULL REFERENCES dataset_versions (dataset_version),
        PRIMARY KEY (dag_id, dataset_uuid)
      )`);
    await q.query(`
      CREATE TABLE secrets (
        org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,127}$'),
        ciphertext  bytea NOT NULL,
        iv          bytea NOT NULL,
        auth_tag    bytea NOT NULL,
        key_id      text NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        updated_by  uuid NOT NULL REFERENCES users (id),
        PRIMARY KEY (org_id, name)
      )`);
  }

  async down(q: QueryRunner): Promise<void> {
    for (const t of ['secrets', 'dag_dataset_pointers', 'dataset_versions', 'datasets', 'dag_grants']) await q.query(`DROP TABLE ${t}`);
    await q.query(`ALTER TABLE dags DROP COLUMN active_version_id`);
    await q.query(`DROP TABLE dag_versions`);
    await q.query(`DROP TABLE dags`);
  }
}
