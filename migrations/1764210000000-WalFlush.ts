import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `trace_wal_flush`: a sequence whose only use is `setval` as a flush of the WAL (WAL_FLUSH_SQL in
 * src/dispatcher/core/event-ingest.ts). An events statement that answers a waiting claim commits
 * asynchronously, so the worker has its attempt one disk flush sooner; before its producer is told
 * the events are accepted, the dispatcher runs `setval` on this sequence in a transaction of its
 * own. `setval` writes WAL and takes a transaction id, so that transaction commits synchronously
 * and flushes the WAL up to its commit record, past the events' (ADR 0019). A transaction that
 * only takes an id (`pg_current_xact_id()`) writes no WAL and would commit asynchronously too.
 * A sequence holds no rows and its lock is not kept to commit: concurrent flushes do not queue.
 */
export class WalFlush1764210000000 implements MigrationInterface {
  name = 'WalFlush1764210000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE SEQUENCE trace_wal_flush`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP SEQUENCE trace_wal_flush`);
  }
}
