import { BeforeApplicationShutdown, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import { JsonLogger } from '../logging/json-logger';

export interface LoopDefinition {
  /** Shown in /health and logs, e.g. `dispatcher.node-reaper`. */
  name: string;
  intervalMs: number;
  tick: () => Promise<void>;
}

interface RunningLoop extends LoopDefinition {
  timer?: NodeJS.Timeout;
  immediate?: NodeJS.Immediate;
  inFlight?: Promise<void>;
  /** Woken while a tick was in flight: run again as soon as it ends. */
  again?: boolean;
}

/**
 * The background loops of the roles this process runs. Modules register loops while they are
 * constructed; they start once the application has bootstrapped and stop before it shuts down,
 * waiting for a tick in flight to finish — so a drained process leaves no half-done tick.
 */
@Injectable()
export class BackgroundLoops implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly loops: RunningLoop[] = [];
  private stopping = false;
  private stopped: Promise<void> = Promise.resolve();

  constructor(private readonly logger: JsonLogger) {}

  register(loop: LoopDefinition): void {
    if (this.loops.some((l) => l.name === loop.name)) throw new Error(`loop ${loop.name} registered twice`);
    this.loops.push({ ...loop });
  }

  names(): string[] {
    return this.loops.map((l) => l.name).sort();
  }

  /** Runs the loop's next tick now instead of at its interval (e.g. on a NOTIFY). */
  wake(name: string): void {
    const loop = this.loops.find((l) => l.name === name);
    if (!loop || this.stopping) return;
    if (loop.inFlight) {
      loop.again = true;
      return;
    }
    if (loop.immediate) return; // already due on the next turn
    clearTimeout(loop.timer);
    this.schedule(loop, 0);
  }

  onApplicationBootstrap(): void {
    for (const loop of this.loops) this.schedule(loop, 0);
    if (this.loops.length) this.logger.event('info', 'BackgroundLoops', 'started', { loops: this.names() });
  }

  beforeApplicationShutdown(): Promise<void> {
    return this.stop();
  }

  /** Idempotent: no new ticks start; resolves when the ticks in flight have finished. */
  async stop(): Promise<void> {
    if (this.stopping) return this.stopped;
    this.stopping = true;
    this.stopped = this.drain();
    return this.stopped;
  }

  private async drain(): Promise<void> {
    for (const loop of this.loops) {
      clearTimeout(loop.timer);
      if (loop.immediate) clearImmediate(loop.immediate);
    }
    await Promise.all(this.loops.flatMap((l) => (l.inFlight ? [l.inFlight] : [])));
    if (this.loops.length) this.logger.event('info', 'BackgroundLoops', 'stopped', { loops: this.names() });
  }

  private schedule(loop: RunningLoop, delay: number): void {
    if (this.stopping) return;
    // A wake-up runs on the next turn of the event loop, not after a timer's minimum delay
    // (about a millisecond, paid on every hop of the task path).
    if (delay === 0) {
      clearTimeout(loop.timer);
      loop.timer = undefined;
      loop.immediate = setImmediate(() => {
        loop.immediate = undefined;
        this.run(loop);
      });
      return;
    }
    loop.timer = setTimeout(() => this.run(loop), delay);
  }

  private run(loop: RunningLoop): void {
    loop.inFlight = loop
      .tick()
      .catch((err: Error) => this.logger.event('error', 'BackgroundLoops', 'tick failed', { loop: loop.name, error: err.message }))
      .finally(() => {
        loop.inFlight = undefined;
        const again = loop.again;
        loop.again = false;
        this.schedule(loop, again ? 0 : loop.intervalMs);
      });
  }
}
