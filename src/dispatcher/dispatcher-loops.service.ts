import { BeforeApplicationShutdown, Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import { DATABASE_TARGET, PgListener, type DatabaseTarget } from '../common/db';
import { BackgroundLoops } from '../common/lifecycle';
import { JsonLogger } from '../common/logging/json-logger';
import { TraceConfig } from '../config';
import { Reaper } from './core/reaper.service';
import { TaskStarter } from './core/task-starter.service';
import { LambdaDispatch } from './lambda/lambda-dispatch.service';
import { TASK_TRANSPORT, type TaskTransport } from './transport/task-transport';

const START_LOOP = 'dispatcher.start-tasks';
const RELAY_LOOP = 'dispatcher.relay';

/** The dispatcher role's loops: start queued tasks (woken by NOTIFY on new tasks) and reap expired attempts. */
@Injectable()
export class DispatcherLoops implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly listener: PgListener;

  constructor(
    private readonly loops: BackgroundLoops,
    starter: TaskStarter,
    lambda: LambdaDispatch,
    reaper: Reaper,
    config: TraceConfig,
    logger: JsonLogger,
    @Inject(DATABASE_TARGET) target: DatabaseTarget,
    @Inject(TASK_TRANSPORT) transport: TaskTransport,
  ) {
    loops.register({
      name: START_LOOP,
      intervalMs: config.dispatch.pollMs,
      tick: async () => {
        // Keep going while a pass starts work: a backlog drains without waiting for the interval.
        for (;;) {
          const { started, lambda: invoke } = await starter.startReady();
          if (invoke.length) await lambda.invoke(invoke);
          if (started === 0) break;
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
          loops.wake(START_LOOP);
        }
      },
    });
    if (transport.kind !== 'local') {
      // The outbox relay: started attempts go to the queue as {"task_id"} messages.
      loops.register({ name: RELAY_LOOP, intervalMs: config.dispatch.pollMs, tick: async () => void (await transport.relay()) });
    }
    this.listener = new PgListener(
      target,
      ['trace_tasks', 'trace_dispatch'],
      (channel) => this.loops.wake(channel === 'trace_tasks' ? START_LOOP : RELAY_LOOP),
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
