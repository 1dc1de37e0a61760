import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { sql } from '../../common/db';
import { releaseSlot } from './attempts.service';

/**
 * Attempts past their deadline — or whose wrapper's node stopped heartbeating — are marked
 * timed out; the task is queued again with back-off until max_attempts, then it fails.
 */
@Injectable()
export class Reaper {
  constructor(private readonly db: DataSource) {}

  async reap(): Promise<{ task_id: string; attempt: number; retried: boolean }[]> {
    return this.db.transaction(async (tx) => {
      const expired = await sql<{ task_id: string; attempt: number; reason: string; max_attempts: number; cancel_requested: boolean }>(
        tx,
        `SELECT a.task_id, a.attempt, t.max_attempts, t.cancel_requested,
                CASE WHEN a.deadline_at < now() THEN 'attempt passed its timeout' ELSE 'the wrapper running it stopped' END AS reason
           FROM task_attempts a JOIN tasks t ON t.id = a.task_id AND t.attempt = a.attempt AND t.status = 'running'
          WHERE a.finished_at IS NULL
            AND (a.deadline_at < now() OR (a.wrapper_node IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = a.wrapper_node)))
          ORDER BY a.deadline_at
          LIMIT 500
          FOR UPDATE OF t SKIP LOCKED`,
      );
      const reaped: { task_id: string; attempt: number; retried: boolean }[] = [];
      for (const a of expired) {
        const retried = a.attempt < a.max_attempts && !a.cancel_requested;
        const final = a.cancel_requested ? 'canceled' : 'failed';
        await tx.query(`UPDATE task_attempts SET finished_at = now(), outcome = 'timed_out', error = $3 WHERE task_id = $1 AND attempt = $2`, [a.task_id, a.attempt, a.reason]);
        await tx.query(
          `UPDATE tasks SET updated_at = now(),
                  status = CASE WHEN $2 THEN 'queued' ELSE $4 END,
                  finished_at = CASE WHEN $2 THEN NULL ELSE now() END,
                  error = CASE WHEN $2 THEN NULL ELSE $3 END,
                  run_after = now() + make_interval(secs => least(60, 2 ^ attempt))
            WHERE id = $1`,
          [a.task_id, retried, `timed out on attempt ${a.attempt} of ${a.max_attempts}: ${a.reason}`, final],
        );
        await tx.query(`DELETE FROM dispatch_queue WHERE task_id = $1 AND attempt = $2`, [a.task_id, a.attempt]);
        await releaseSlot(tx, a.task_id);
        reaped.push({ task_id: a.task_id, attempt: a.attempt, retried });
      }
      return reaped;
    });
  }
}
