import type { TaskPayload } from '../core/task-payload';
import type { DispatchMessage, TaskClaimer, TaskTransport } from './task-transport';

interface Claim {
  max: number;
  answer: Promise<TaskPayload[]>;
  /** Resolves (never rejects) when the answer is in. */
  settled: Promise<Claim>;
}

/**
 * The local transport: a started attempt waits in task_attempts itself (`delivery = 'local'`,
 * not yet bound). A wrapper claims up to its free capacity through the dispatcher
 * (POST /internal/task-claim), which selects the oldest unclaimed attempts with SKIP LOCKED and
 * binds them to the wrapper in the same statement, so each arrives already fetched. An idle
 * wrapper's claim is a long poll: the dispatcher answers it as soon as it starts attempts (or
 * hears NOTIFY trace_dispatch from another dispatcher that did), else after `waitMs`. A wrapper
 * that dies holding attempts loses nothing: its node stops heartbeating and the reaper retries them.
 *
 * While work is sparse (the last claim came back short), the free capacity is claimed by two
 * long polls, one of them for a single attempt: when one is answered, the other is still
 * waiting at the dispatcher for the next event, instead of the next attempt waiting for this
 * wrapper's next poll to arrive (ADR 0016). Claims outstanding hold their share of the capacity
 * until they are answered; drain() collects what they still bring.
 */
export class LocalTransport implements TaskTransport {
  readonly kind = 'local' as const;
  private readonly outstanding = new Set<Claim>();
  private sparse = false;

  constructor(private readonly waitMs: number) {}

  async relay(): Promise<number> {
    return 0;
  }

  async receive(free: number, dispatcher: TaskClaimer): Promise<DispatchMessage[]> {
    let room = free - [...this.outstanding].reduce((n, c) => n + c.max, 0);
    if (room > 0 && this.sparse && this.outstanding.size === 0 && room >= 2) {
      this.claim(1, dispatcher);
      room -= 1;
    }
    if (room > 0) this.claim(room, dispatcher);
    if (this.outstanding.size === 0) return [];
    const first = await Promise.race([...this.outstanding].map((c) => c.settled));
    this.outstanding.delete(first);
    const payloads = await first.answer;
    this.sparse = payloads.length < first.max;
    return payloads.map(message);
  }

  /** After the last receive: waits for the claims still out and returns what they brought (they are bound to this wrapper). */
  async drain(): Promise<DispatchMessage[]> {
    const claims = [...this.outstanding];
    this.outstanding.clear();
    const answers = await Promise.all(claims.map((c) => c.answer.catch(() => [] as TaskPayload[])));
    return answers.flat().map(message);
  }

  async close(): Promise<void> {
    await Promise.all([...this.outstanding].map((c) => c.settled));
    this.outstanding.clear();
  }

  private claim(max: number, dispatcher: TaskClaimer): void {
    const answer = dispatcher.claim(max, this.waitMs);
    const claim: Claim = { max, answer, settled: undefined as unknown as Promise<Claim> };
    claim.settled = answer.then(
      () => claim,
      () => claim,
    );
    this.outstanding.add(claim);
  }
}

const message = (payload: TaskPayload): DispatchMessage => ({ taskId: payload.task_id, payload, ack: async () => undefined });
