import { BeforeApplicationShutdown, Injectable } from '@nestjs/common';

/**
 * Long polls of POST /internal/task-claim: a wrapper that finds nothing to claim may wait for
 * work instead of polling. A claim that came back empty waits here until attempts may have
 * become claimable — this process started some, or NOTIFY trace_dispatch says another
 * dispatcher did — or until its wait is over, and then tries again. The generation counter
 * closes the gap between an empty claim and the wait: a start in between is not missed.
 */
@Injectable()
export class ClaimWaiters implements BeforeApplicationShutdown {
  private generation = 0;
  private closing = false;
  private readonly waiting = new Set<() => void>();

  /** The current generation: read it before claiming, pass it to wait(). */
  get current(): number {
    return this.generation;
  }

  /** Attempts may be claimable now: every waiting claim tries again. */
  signal(): void {
    this.generation++;
    for (const wake of this.waiting) wake();
    this.waiting.clear();
  }

  /** Resolves at once if something happened since `seen`, else on the next signal or after `ms`. */
  wait(seen: number, ms: number): Promise<void> {
    if (this.closing || this.generation !== seen || ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(wake);
        resolve();
      }, ms);
      const wake = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiting.add(wake);
    });
  }

  /** Draining: waiting claims answer now (empty), so the HTTP server can close. */
  beforeApplicationShutdown(): void {
    this.closing = true;
    this.signal();
  }
}
