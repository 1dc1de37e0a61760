import { BeforeApplicationShutdown, Injectable } from '@nestjs/common';
import type { TaskPayload } from '../core/task-payload';

/** What a waiting claim asks for: up to `max` attempts, bound to wrapper node `node`. */
export interface WaitingClaim {
  max: number;
  node: string | undefined;
}

interface Waiter {
  claim?: WaitingClaim;
  timer: NodeJS.Timeout;
  resolve(served: TaskPayload[] | undefined): void;
}

/**
 * Long polls of POST /internal/task-claim: a wrapper that finds nothing to claim may wait for
 * work instead of polling. A claim that came back empty waits here until attempts may have
 * become claimable — this process started some, or NOTIFY trace_dispatch says another
 * dispatcher did — or until its wait is over, and then tries again. The generation counter
 * closes the gap between an empty claim and the wait: a start in between is not missed.
 *
 * A statement that starts tasks may also answer a waiting claim itself (the events statement,
 * through trace_claim): it takes the longest-waiting claim out of the wait (take()) and answers
 * it with the attempts it claimed for it, so they reach the wrapper without another statement.
 */
@Injectable()
export class ClaimWaiters implements BeforeApplicationShutdown {
  private generation = 0;
  /** The generation at which a claim last came back short (fewer attempts than it asked for). */
  private drainedAt = -1;
  private closing = false;
  private readonly waiting = new Set<Waiter>();

  /** Draining: claims answer with what they have instead of waiting. */
  get closed(): boolean {
    return this.closing;
  }

  /** The current generation: read it before claiming, pass it to wait(). */
  get current(): number {
    return this.generation;
  }

  /**
   * A claim read `seen` before its statement and got fewer attempts than it asked for: if no
   * signal came since, nothing is claimable, as far as this process knows.
   */
  drained(seen: number): void {
    if (seen === this.generation) this.drainedAt = seen;
  }

  /**
   * Nothing has been started since a claim came back short: a new long poll can wait at once,
   * without a statement of its own, and so be there for the next statement that starts work.
   * Every start signals (this process's own at once; another dispatcher's by NOTIFY), and a
   * wait ends by its deadline in any case.
   */
  get drainedNow(): boolean {
    return this.drainedAt === this.generation;
  }

  /** Attempts may be claimable now: every waiting claim tries again. */
  signal(): void {
    this.generation++;
    for (const waiter of this.waiting) {
      clearTimeout(waiter.timer);
      waiter.resolve(undefined);
    }
    this.waiting.clear();
  }

  /**
   * Resolves at once if something happened since `seen`, else on the next signal or after `ms`
   * (undefined: claim again), or with the attempts a statement claimed for `claim` (take()).
   */
  wait(seen: number, ms: number, claim?: WaitingClaim): Promise<TaskPayload[] | undefined> {
    if (this.closing || this.generation !== seen || ms <= 0) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        claim,
        resolve,
        timer: setTimeout(() => {
          this.waiting.delete(waiter);
          resolve(undefined);
        }, ms),
      };
      this.waiting.add(waiter);
    });
  }

  /**
   * The longest-waiting claim, out of the wait: the caller must answer it exactly once, with the
   * attempts it claimed for it, or with undefined (it claims again itself).
   */
  take(): { claim: WaitingClaim; answer(served: TaskPayload[] | undefined): void } | undefined {
    if (this.closing) return undefined;
    for (const waiter of this.waiting) {
      if (!waiter.claim) continue;
      this.waiting.delete(waiter);
      clearTimeout(waiter.timer);
      return { claim: waiter.claim, answer: (served) => waiter.resolve(served) };
    }
    return undefined;
  }

  /** Draining: waiting claims answer now (empty), so the HTTP server can close. */
  beforeApplicationShutdown(): void {
    this.closing = true;
    this.signal();
  }
}
