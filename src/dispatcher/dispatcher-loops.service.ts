import { BeforeApplicationShutdown, Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import { DATABASE_TARGET, PgListener, TaskPathPoolOwner, type DatabaseTarget } from '../common/db';
import type { EventEmitter } from 'node:events';
import { DataSource } from 'typeorm';
import { BackgroundLoops } from '../common/lifecycle';
import { JsonLogger } from '../common/logging/json-logger';
import { TraceConfig } from '../config';
import { Reaper } from './core/reaper.service';
import { MeterSignal, type JobKey } from './core/meter-signal';
import { TaskStarter } from './core/task-starter.service';
import { ClaimWaiters } from './internal/claim-waiters';
import { LambdaDispatch } from './lambda/lambda-dispatch.service';
import { TASK_TRANSPORT, type TaskTransport } from './transport/task-transport';

const START_LOOP = 'dispatcher.start-tasks';
const RELAY_LOOP = 'dispatcher.relay';

/** The dispatcher role's loops: start queued tasks (woken by NOTIFY on new tasks) and reap expired attempts. */
@Injectable()
export class DispatcherLoops implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly listener: PgListener;
  /** Jobs named by NOTIFY trace_tasks since the last tick, keyed by the payload. */
  private readonly named = new Map<string, JobKey>();
  private fullPassDue = true;
  private lastFullPass = 0;

  constructor(
    private readonly loops: BackgroundLoops,
    starter: TaskStarter,
    lambda: LambdaDispatch,
    reaper: Reaper,
    meter: MeterSignal,
    config: TraceConfig,
    logger: JsonLogger,
    @Inject(DATABASE_TARGET) target: DatabaseTarget,
    @Inject(TASK_TRANSPORT) transport: TaskTransport,
    waiters: ClaimWaiters,
    db: DataSource,
    taskPath: TaskPathPoolOwner,
  ) {
    // The backends of this process's own pools: their NOTIFY trace_dispatch is this process's own
    // start, whose waiting claims were already told (MeterSignal, the start loop below).
    const own = new Set<number>();
    for (const pool of [(db.driver as unknown as { master?: EventEmitter }).master, taskPath.pool as unknown as EventEmitter]) {
      pool?.on('acquire', (client: { processID?: number }) => client.processID && own.add(client.processID));
      pool?.on('remove', (client: { processID?: number }) => client.processID && own.delete(client.processID));
    }
    loops.register({
      name: START_LOOP,
      intervalMs: config.dispatch.pollMs,
      tick: async () => {
        // Woken by NOTIFYs that name jobs: meter just those. On the interval (or a wake-up that
        // names no job), a full pass finds every job with startable work, e.g. retries whose
        // back-off has passed. Keep going while a full pass left jobs unvisited.
        const named = [...this.named.values()];
        this.named.clear();
        const full = this.fullPassDue || Date.now() - this.lastFullPass >= config.dispatch.pollMs;
        // Started attempts that wrappers claim: waiting claims (long polls) try again at once.
        const started = async ({ started: n, lambda: invoke }: { started: number; lambda: string[] }) => {
          if (n > invoke.length) waiters.signal();
          if (invoke.length) await lambda.invoke(invoke);
        };
        if (!full) {
          await started(await starter.startJobs(named));
          return;
        }
        this.fullPassDue = false;
        this.lastFullPass = Date.now();
        for (;;) {
          const pass = await starter.startReady();
          await started(pass);
          if (!pass.more) break;
        }
      },
    });
    loops.register({
      name: 'dispatcher.reaper',
      intervalMs: config.dispatch.reaperIntervalMs,
      tick: async () => {
        const reaped = await reaper.reap();
        if (reaped.length) {
          logger.event('warn', 'Reaper', 'timed out attempts', { attempts: reaped });
          this.fullPassDue = true;
          loops.wake(START_LOOP);
        }
      },
    });
    if (transport.kind !== 'local') {
      // The outbox relay: started attempts go to the queue as {"task_id"} messages.
      loops.register({ name: RELAY_LOOP, intervalMs: config.dispatch.pollMs, tick: async () => void (await transport.relay()) });
    }
    // Events and completions handled by this process wake metering directly (MeterSignal).
    meter.attach(
      (jobs) => {
        for (const job of jobs) this.named.set(`${job.dag_id} ${job.job_name}`, job);
        this.loops.wake(START_LOOP);
      },
      () => waiters.signal(),
    );
    this.listener = new PgListener(
      target,
      ['trace_tasks', 'trace_dispatch'],
      (channel, payload, sender) => {
        if (channel !== 'trace_tasks') {
          // trace_dispatch: some dispatcher started attempts — relay them (SQS), or let waiting
          // claims look (local) when another process started them.
          if (!own.has(sender)) waiters.signal();
          return this.loops.wake(RELAY_LOOP);
        }
        const job = parseJobKey(payload);
        if (job) this.named.set(payload, job);
        else this.fullPassDue = true;
        this.loops.wake(START_LOOP);
      },
      logger,
    );
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.listener.start();
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.listener.stop();
  }
}

/** A trace_tasks payload is `<dag_id> <job_name>`; anything else asks for a full pass. */
function parseJobKey(payload: string): JobKey | undefined {
  const m = /^([0-9a-f-]{36}) (\S+)$/.exec(payload);
  return m ? { dag_id: m[1]!, job_name: m[2]! } : undefined;
}
