import type { TaskPayload } from '../core/task-payload';

/**
 * A started attempt for a wrapper. An SQS message carries the task id only (thin message) and
 * the wrapper fetches the payload; a local claim arrives with its payload, already bound.
 */
export interface DispatchMessage {
  taskId: string;
  /** Present when the attempt was claimed and bound by the receive itself (local transport). */
  payload?: TaskPayload;
  /** Acknowledge once the attempt is bound to this wrapper (fetched) or found not runnable. */
  ack(): Promise<void>;
}

/** The wrapper's dispatcher client, as far as receiving needs it: POST /internal/task-claim (a long poll with waitMs). */
export interface TaskClaimer {
  claim(max: number, waitMs?: number): Promise<TaskPayload[]>;
}

/**
 * How started attempts reach wrappers. Local: the started attempt in task_attempts is the queue
 * entry, claimed through the dispatcher. SQS: the start also writes a dispatch_queue row in the
 * same transaction (an outbox), which the dispatcher relays as a `{"task_id"}` message.
 */
export interface TaskTransport {
  readonly kind: 'local' | 'sqs';
  /** Dispatcher side: moves outbox rows to the transport; returns how many. Local: nothing to do. */
  relay(): Promise<number>;
  /** Wrapper side: up to `max` messages, waiting briefly when there are none. */
  receive(max: number, dispatcher: TaskClaimer): Promise<DispatchMessage[]>;
  /** Wrapper side, after the last receive: messages that receives still outstanding bring in (to be run, not dropped). */
  drain(): Promise<DispatchMessage[]>;
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
