import type { DataSource } from 'typeorm';
import { prepared } from '../../common/db';
import type { DispatchMessage, TaskTransport } from './task-transport';

/** How long a claimed row stays invisible to other wrappers, like an SQS visibility timeout. */
const VISIBILITY_SECONDS = 30;

/**
 * Wrappers claim rows straight from the dispatch_queue outbox (SKIP LOCKED; NOTIFY wakes them);
 * task-fetch deletes a row when it binds the attempt, and ack deletes one the dispatcher refused. A wrapper that dies between the two loses
 * nothing: its claim is released when its node disappears or the visibility timeout passes.
 */
export class LocalTransport implements TaskTransport {
  readonly kind = 'local' as const;

  constructor(
    private readonly db: DataSource,
    private readonly nodeId: string,
  ) {}

  async relay(): Promise<number> {
    return 0;
  }

  async receive(max: number): Promise<DispatchMessage[]> {
    const rows = await prepared<{ task_id: string; attempt: number }>(
      this.db,
      'trace_local_claim',
      `UPDATE dispatch_queue SET claimed_by = $2, claimed_at = now()
        WHERE (task_id, attempt) IN (
          SELECT task_id, attempt FROM dispatch_queue d
           WHERE d.claimed_at IS NULL
              OR d.claimed_at < now() - make_interval(secs => $3)
              OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = d.claimed_by)
           ORDER BY enqueued_at LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING task_id, attempt`,
      [max, this.nodeId, VISIBILITY_SECONDS],
    );
    return rows.map((r) => ({
      taskId: r.task_id,
      spentByFetch: true,
      ack: async () => {
        await this.db.query(`DELETE FROM dispatch_queue WHERE task_id = $1 AND attempt = $2`, [r.task_id, r.attempt]);
      },
    }));
  }

  async close(): Promise<void> {}
}
