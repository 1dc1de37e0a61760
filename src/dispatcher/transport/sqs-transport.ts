import { DeleteMessageCommand, ReceiveMessageCommand, SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { DataSource } from 'typeorm';
import type { JsonLogger } from '../../common/logging/json-logger';
import { parseDispatchBody, type DispatchMessage, type TaskTransport } from './task-transport';

const BATCH = 10; // SQS's own limit per SendMessageBatch / ReceiveMessage

/**
 * SQS: the dispatcher relays outbox rows as `{"task_id"}` messages (thin: the wrapper fetches the
 * payload); wrappers long-poll the queue. A message is deleted once its attempt is fetched —
 * a redelivery after that is refused by task-fetch anyway, so an attempt runs once.
 */
export class SqsTransport implements TaskTransport {
  readonly kind = 'sqs' as const;
  private readonly client: SQSClient;

  constructor(
    private readonly db: DataSource,
    private readonly options: { queueUrl: string; region: string; endpoint?: string; waitSeconds: number },
    private readonly logger: JsonLogger,
  ) {
    this.client = new SQSClient({ region: options.region, ...(options.endpoint ? { endpoint: options.endpoint } : {}) });
  }

  /** Sends outbox rows in batches; rows leave the outbox only in the transaction that saw them sent. */
  async relay(): Promise<number> {
    let moved = 0;
    for (;;) {
      const sent = await this.db.transaction(async (tx) => {
        const rows = (await tx.query(
          `SELECT task_id, attempt FROM dispatch_queue ORDER BY enqueued_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
          [BATCH],
        )) as { task_id: string; attempt: number }[];
        if (rows.length === 0) return 0;
        const result = await this.client.send(
          new SendMessageBatchCommand({
            QueueUrl: this.options.queueUrl,
            Entries: rows.map((r, i) => ({ Id: String(i), MessageBody: JSON.stringify({ task_id: r.task_id }) })),
          }),
        );
        const ok = new Set((result.Successful ?? []).map((s) => Number(s.Id)));
        for (const failure of result.Failed ?? []) {
          this.logger.event('warn', 'SqsTransport', 'message not sent; will retry', { task_id: rows[Number(failure.Id)]?.task_id, error: failure.Message });
        }
        const done = rows.filter((_, i) => ok.has(i));
        for (const r of done) await tx.query(`DELETE FROM dispatch_queue WHERE task_id = $1 AND attempt = $2`, [r.task_id, r.attempt]);
        return done.length;
      });
      moved += sent;
      if (sent < BATCH) return moved;
    }
  }

  async receive(max: number): Promise<DispatchMessage[]> {
    const result = await this.client.send(
      new ReceiveMessageCommand({ QueueUrl: this.options.queueUrl, MaxNumberOfMessages: Math.min(max, BATCH), WaitTimeSeconds: this.options.waitSeconds }),
    );
    const messages: DispatchMessage[] = [];
    for (const m of result.Messages ?? []) {
      const ack = async () => {
        await this.client.send(new DeleteMessageCommand({ QueueUrl: this.options.queueUrl, ReceiptHandle: m.ReceiptHandle }));
      };
      const taskId = parseDispatchBody(m.Body);
      if (!taskId) {
        this.logger.event('warn', 'SqsTransport', 'discarded a message that is not {"task_id": "<uuid>"}', { message_id: m.MessageId });
        await ack();
        continue;
      }
      messages.push({ taskId, ack });
    }
    return messages;
  }

  /** Each receive is awaited to its end: nothing is outstanding after the last one. */
  async drain(): Promise<DispatchMessage[]> {
    return [];
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
