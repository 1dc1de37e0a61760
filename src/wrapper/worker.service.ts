import { BeforeApplicationShutdown, Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { DATABASE_TARGET, PgListener, sql, type DatabaseTarget } from '../common/db';
import { InternalCredential } from '../common/keys/internal-credential';
import { BackgroundLoops, NodeRegistry } from '../common/lifecycle';
import { JsonLogger } from '../common/logging/json-logger';
import { TraceConfig } from '../config';
import { DispatcherCallError, DispatcherClient } from './dispatcher-client';
import { TaskRunner } from './task-runner';

const RECEIVE_LOOP = 'wrapper.receive';

/**
 * The `wrapper` role: receives started attempts from the transport (local: the dispatch_queue
 * table, claimed with SKIP LOCKED and woken by NOTIFY), fetches each payload and runs it, up to
 * TRACE_WRAPPER_CONCURRENCY at once. On drain it stops receiving and waits for running tasks.
 */
@Injectable()
export class WorkerService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly running = new Set<Promise<void>>();
  private readonly listener: PgListener;
  private client?: DispatcherClient;
  private runner?: TaskRunner;

  constructor(
    private readonly db: DataSource,
    private readonly config: TraceConfig,
    private readonly logger: JsonLogger,
    private readonly credential: InternalCredential,
    private readonly node: NodeRegistry,
    private readonly loops: BackgroundLoops,
    @Inject(DATABASE_TARGET) target: DatabaseTarget,
  ) {
    loops.register({ name: RECEIVE_LOOP, intervalMs: config.dispatch.pollMs, tick: () => this.receive() });
    this.listener = new PgListener(target, ['trace_dispatch'], () => loops.wake(RECEIVE_LOOP), logger);
  }

  /** Called once the HTTP server listens, so a same-process dispatcher URL is known. */
  attach(dispatcherUrl: string): void {
    this.client = new DispatcherClient(this.config.dispatch.dispatcherUrl ?? dispatcherUrl, this.credential.token, this.node.nodeId);
    this.runner = new TaskRunner(this.client, { codeRoot: this.config.dispatch.codeRoot, sandboxUser: this.config.dispatch.sandboxUser, statusPollMs: 500, eventBatch: 100, flushMs: 250 }, this.logger);
    this.loops.wake(RECEIVE_LOOP);
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.listener.start();
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.listener.stop();
    await Promise.all(this.running);
  }

  private async receive(): Promise<void> {
    if (!this.client || !this.runner) return;
    const free = this.config.dispatch.wrapperConcurrency - this.running.size;
    if (free <= 0) return;
    const messages = await sql<{ task_id: string }>(
      this.db,
      `DELETE FROM dispatch_queue WHERE (task_id, attempt) IN
         (SELECT task_id, attempt FROM dispatch_queue ORDER BY enqueued_at LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING task_id`,
      [free],
    );
    for (const m of messages) {
      const job = this.handle(m.task_id).finally(() => {
        this.running.delete(job);
        this.loops.wake(RECEIVE_LOOP);
      });
      this.running.add(job);
    }
  }

  private async handle(taskId: string): Promise<void> {
    try {
      const payload = await this.client!.fetchTask(taskId);
      await this.runner!.run(payload);
    } catch (err) {
      const stale = err instanceof DispatcherCallError && err.code === 'stale_attempt';
      this.logger.event(stale ? 'info' : 'error', 'Wrapper', stale ? 'dropped a message for an attempt that is not runnable' : 'task handling failed', { task_id: taskId, error: (err as Error).message });
    }
  }
}
