/** A started attempt waiting for a wrapper. The message carries the task id only (thin message). */
export interface DispatchMessage {
  taskId: string;
  /** Acknowledge once the attempt is bound to this wrapper (fetched) or found not runnable. */
  ack(): Promise<void>;
  /** True when a successful task-fetch already removed the message (the local outbox row), so no ack is needed then. */
  readonly spentByFetch: boolean;
}

/**
 * How started attempts reach wrappers. Every start is first written to the dispatch_queue table
 * in the transaction that starts the attempt (an outbox); the local transport lets wrappers take
 * rows straight from it, the SQS transport relays them to a queue as `{"task_id"}` messages.
 */
export interface TaskTransport {
  readonly kind: 'local' | 'sqs';
  /** Dispatcher side: moves outbox rows to the transport; returns how many. Local: nothing to do. */
  relay(): Promise<number>;
  /** Wrapper side: up to `max` messages, waiting briefly when there are none. */
  receive(max: number): Promise<DispatchMessage[]>;
  close(): Promise<void>;
}

export const TASK_TRANSPORT = Symbol('TASK_TRANSPORT');

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A message from the queue is untrusted input: exactly `{"task_id": "<uuid>"}` or it is refused. */
export function parseDispatchBody(body: string | undefined): string | undefined {
  try {
    const parsed = JSON.parse(body ?? '') as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
    const keys = Object.keys(parsed);
    const taskId = (parsed as { task_id?: unknown }).task_id;
    return keys.length === 1 && typeof taskId === 'string' && UUID.test(taskId) ? taskId : undefined;
  } catch {
    return undefined;
  }
}
