import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Orgs, users, memberships that carry roles (ADR 0001), hashed API tokens, and the node registry
 * (one row per running Trace process, kept fresh by its heartbeat).
 */
export class Identity1764090000000 implements MigrationInterface {
  name = 'Identity1764090000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE orgs (
        id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
        created_at  timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`
      CREATE TABLE users (
        id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        email           text NOT NULL,
        display_name    text,
        platform_admin  boolean NOT NULL DEFAULT false,
        created_at      timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`CREATE UNIQUE INDEX users_email_key ON users (lower(email))`);
    await q.query(`
      CREATE TABLE org_memberships (
        org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
        user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        roles       text[] NOT NULL DEFAULT '{}',
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (org_id, user_id)
      )`);
    await q.query(`CREATE INDEX org_memberships_user_idx ON org_memberships (user_id)`);
    await q.query(`
      CREATE TABLE api_tokens (
        id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        org_id        uuid NOT NULL,
        user_id       uuid NOT NULL,
        name          text NOT NULL,
        token_hash    bytea NOT NULL UNIQUE,
        token_prefix  text NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz,
        revoked_at    timestamptz,
        last_used_at  timestamptz,
        FOREIGN KEY (org_id, user_id) REFERENCES org_memberships (org_id, user_id) ON DELETE CASCADE
      )`);
    await q.query(`CREATE INDEX api_tokens_member_idx ON api_tokens (org_id, user_id)`);
    await q.query(`
      CREATE TABLE nodes (
        id            uuid PRIMARY KEY,
        roles         text[] NOT NULL,
        hostname      text NOT NULL,
        pid           integer NOT NULL,
        started_at    timestamptz NOT NULL DEFAULT now(),
        heartbeat_at  timestamptz NOT NULL DEFAULT now()
      )`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE nodes`);
    await q.query(`DROP TABLE api_tokens`);
    await q.query(`DROP TABLE org_memberships`);
    await q.query(`DROP TABLE users`);
    await q.query(`DROP TABLE orgs`);
  }
}
