import type { DataSource } from 'typeorm';
import { sql } from '../../common/db';
import type { DispatchMessage, TaskTransport } from './task-transport';

/** Wrappers take rows straight from the dispatch_queue outbox (SKIP LOCKED; NOTIFY wakes them). */
export class LocalTransport implements TaskTransport {
  readonly kind = 'local' as const;

  constructor(private readonly db: DataSource) {}

  async relay(): Promise<number> {
    return 0;
  }

  async receive(max: number): Promise<DispatchMessage[]> {
    const rows = await sql<{ task_id: string }>(
      this.db,
      `DELETE FROM dispatch_queue WHERE (task_id, attempt) IN
         (SELECT task_id, attempt FROM dispatch_queue ORDER BY enqueued_at LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING task_id`,
      [max],
    );
    return rows.map((r) => ({ taskId: r.task_id, ack: async () => undefined }));
  }

  async close(): Promise<void> {}
}
