import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Attempt tokens name their attempt (`tra_` + task id, attempt number and a 32-byte secret;
 * src/dispatcher/core/attempt-token.ts), so every call is checked against the attempt's own row,
 * found by its primary key, and `token_hash` (now the SHA-256 of the secret) needs no index of its
 * own. The unique index on it cost three index entries per attempt — written when the attempt was
 * inserted (a NULL), bound and finished — at random places in a tree as large as the table
 * (docs/benchmarks.md, "Dispatch").
 *
 * Tokens issued before this migration do not name their attempt: a wrapper holding one is
 * refused (`401 attempt token is unknown`) and its attempt is retried at its deadline.
 */
export class AttemptTokensNameTheirAttempt1764200000000 implements MigrationInterface {
  name = 'AttemptTokensNameTheirAttempt1764200000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_token_hash_key`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_token_hash_key UNIQUE (token_hash)`);
  }
}
