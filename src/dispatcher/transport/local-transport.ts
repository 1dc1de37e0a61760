import type { DispatchMessage, TaskClaimer, TaskTransport } from './task-transport';

/**
 * The local transport: a started attempt waits in task_attempts itself (`delivery = 'local'`,
 * not yet bound). A wrapper claims up to its free capacity through the dispatcher
 * (POST /internal/task-claim), which selects the oldest unclaimed attempts with SKIP LOCKED and
 * binds them to the wrapper in the same statement, so each arrives already fetched. An idle
 * wrapper's claim is a long poll: the dispatcher answers it as soon as it starts attempts (or
 * hears NOTIFY trace_dispatch from another dispatcher that did), else after `waitMs`. A wrapper
 * that dies holding attempts loses nothing: its node stops heartbeating and the reaper retries them.
 */
export class LocalTransport implements TaskTransport {
  readonly kind = 'local' as const;

  constructor(private readonly waitMs: number) {}

  async relay(): Promise<number> {
    return 0;
  }

  async receive(max: number, dispatcher: TaskClaimer): Promise<DispatchMessage[]> {
    const payloads = await dispatcher.claim(max, this.waitMs);
    return payloads.map((payload) => ({ taskId: payload.task_id, payload, ack: async () => undefined }));
  }

  async close(): Promise<void> {}
}
