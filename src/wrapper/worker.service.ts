import { BeforeApplicationShutdown, Inject, Injectable } from '@nestjs/common';
import { SelfUrl } from '../common/http/self-url';
import { InternalCredential } from '../common/keys/internal-credential';
import { BackgroundLoops, NodeRegistry } from '../common/lifecycle';
import { JsonLogger } from '../common/logging/json-logger';
import { OBJECT_STORE, type ObjectStore } from '../common/storage';
import { TraceConfig } from '../config';
import { BUILTIN_OPERATORS } from '../operators';
import { PostgresDatasetWriter } from '../operators/tables/postgres-dataset-writer';
import { DataSource } from 'typeorm';
import { TASK_TRANSPORT, type DispatchMessage, type TaskTransport } from '../dispatcher/transport/task-transport';
import { DispatcherCallError, DispatcherClient } from './dispatcher-client';
import { Sandbox, SANDBOX_LEASE_DIR } from './sandbox';
import { TaskRunner } from './task-runner';

const RECEIVE_LOOP = 'wrapper.receive';

/**
 * The `wrapper` role: receives started attempts from the transport (local: claimed through the
 * dispatcher, arriving with their payloads, woken by NOTIFY; SQS: thin messages, each payload
 * fetched) and runs them, up to TRACE_WRAPPER_CONCURRENCY at once. On drain it stops receiving
 * and waits for running tasks.
 */
@Injectable()
export class WorkerService implements BeforeApplicationShutdown {
  private readonly running = new Set<Promise<void>>();
  /** Completions in flight for operators that have finished. */
  private readonly completing = new Set<Promise<void>>();
  private client?: DispatcherClient;
  private runner?: TaskRunner;

  constructor(
    @Inject(TASK_TRANSPORT) private readonly transport: TaskTransport,
    private readonly config: TraceConfig,
    private readonly logger: JsonLogger,
    private readonly credential: InternalCredential,
    private readonly node: NodeRegistry,
    private readonly loops: BackgroundLoops,
    private readonly self: SelfUrl,
    @Inject(OBJECT_STORE) private readonly store: ObjectStore,
    private readonly db: DataSource,
  ) {
    // Both transports long-poll (local: the dispatcher holds an empty task-claim; SQS: ReceiveMessage waits).
    loops.register({ name: RECEIVE_LOOP, intervalMs: config.dispatch.pollMs, tick: () => this.receive() });
  }

  /** The client and runner exist once the dispatcher's URL is known (this process listens, or it is configured). */
  private ready(): boolean {
    if (this.client) return true;
    const url = this.self.dispatcher();
    if (!url) return false;
    this.client = new DispatcherClient(url, this.credential.token, this.node.nodeId);
    this.runner = new TaskRunner(
      this.client,
      {
        codeRoot: this.config.dispatch.codeRoot,
        sandbox: new Sandbox({
          ...this.config.dispatch.sandbox,
          leaseDir: SANDBOX_LEASE_DIR,
          hiddenPaths: [this.config.dataDir, this.config.storage.dir, this.config.storage.scratchDir],
        }),
        output: this.config.dispatch.sandbox.output,
        statusPollMs: 500,
        eventBatch: 100,
        flushMs: 250,
        builtins: BUILTIN_OPERATORS,
        store: this.store,
        tables: new PostgresDatasetWriter(this.db),
        scratchDir: this.config.storage.scratchDir,
      },
      this.logger,
    );
    return true;
  }

  async beforeApplicationShutdown(): Promise<void> {
    // First the receive loop: a claim in flight (a long poll) may still bring attempts, which are
    // then bound to this wrapper and must run before it exits.
    await this.loops.stop();
    for (const m of await this.transport.drain()) this.start(m);
    await Promise.all(this.running);
    await Promise.all(this.completing);
    this.client?.close();
    await this.transport.close();
  }

  private async receive(): Promise<void> {
    if (!this.ready()) return;
    const free = this.config.dispatch.wrapperConcurrency - this.running.size;
    if (free <= 0) return;
    const messages = await this.transport.receive(free, this.client!);
    // The long poll paces the loop: ask again at once while there is room (a failed call waits the interval).
    if (this.transport.kind === 'local' && messages.length < free) this.loops.wake(RECEIVE_LOOP);
    for (const m of messages) this.start(m);
  }

  private start(message: DispatchMessage): void {
    const job = this.handle(message).finally(() => {
      this.running.delete(job);
      this.loops.wake(RECEIVE_LOOP);
    });
    this.running.add(job);
  }

  private async handle(message: DispatchMessage): Promise<void> {
    const taskId = message.taskId;
    try {
      let payload = message.payload;
      if (!payload) {
        try {
          payload = await this.client!.fetchTask(taskId);
        } catch (err) {
          // The dispatcher answered (e.g. stale: not runnable) → the message is spent. No answer → leave
          // it; the transport redelivers, or the reaper retries the attempt.
          if (err instanceof DispatcherCallError) await message.ack();
          throw err;
        }
      }
      await message.ack();
      const { completed } = await this.runner!.run(payload);
      // The operator is done, so its slot is free; the completion finishes in the background.
      this.completing.add(completed);
      void completed.finally(() => this.completing.delete(completed));
    } catch (err) {
      const stale = err instanceof DispatcherCallError && err.code === 'stale_attempt';
      this.logger.event(stale ? 'info' : 'error', 'Wrapper', stale ? 'dropped a message for an attempt that is not runnable' : 'task handling failed', { task_id: taskId, error: (err as Error).message });
    }
  }
}
