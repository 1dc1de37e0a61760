import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ObjectStore } from '../common/storage';
import type { BuiltinOperator } from '../operators/operator';
import type { PostgresDatasetWriter } from '../operators/tables/postgres-dataset-writer';
import type { EmittedEvent, TaskPayload } from '../dispatcher/core/task-payload';
import type { JsonLogger } from '../common/logging/json-logger';
import { DispatcherCallError, DispatcherClient } from './dispatcher-client';
import { parseUserMessage, UserTask } from './runtimes/protocol';
import { spawnSandboxed } from './sandbox';

export interface RunnerOptions {
  codeRoot: string;
  sandboxUser: string;
  /** How often a running attempt asks whether it is still current and not canceled. */
  statusPollMs: number;
  /** Events are relayed in batches of this many, or after flushMs, whichever comes first (the rest with completion). */
  eventBatch: number;
  flushMs: number;
  /** Built-in operators by name, and what they need: the object store and a scratch directory. */
  builtins?: Readonly<Record<string, BuiltinOperator>>;
  store?: ObjectStore;
  tables?: PostgresDatasetWriter;
  scratchDir?: string;
}

/**
 * Runs one fetched attempt: reports Canceled without running anything, otherwise starts the
 * operator, relays its events with the attempt token, and completes. Only this class holds the
 * attempt token; the operator process never sees it.
 */
export class TaskRunner {
  constructor(
    private readonly client: DispatcherClient,
    private readonly options: RunnerOptions,
    private readonly logger: JsonLogger,
  ) {}

  /**
   * Resolves once the operator has finished (its concurrency slot is free again) with the
   * completion still in flight: the wrapper takes its next task while the completion travels,
   * and its drain waits for `completed`. `completed` never rejects; a refused completion is logged.
   */
  async run(payload: TaskPayload): Promise<{ completed: Promise<void> }> {
    const token = payload.attempt_token;
    const log = { task_id: payload.task_id, attempt: payload.attempt, job: payload.job.name };
    const complete = (outcome: 'succeeded' | 'failed' | 'canceled', events: EmittedEvent[], error: string | undefined, message: string) =>
      this.client.complete(token, outcome, events, error).then(
        () => this.logger.event(outcome === 'succeeded' ? 'info' : 'warn', 'Wrapper', message, { ...log, error }),
        // A stale attempt's completion is refused by design; anything else is worth a warning.
        (err: Error) => this.logger.event(err instanceof DispatcherCallError && err.code === 'stale_attempt' ? 'info' : 'warn', 'Wrapper', 'completion not accepted', { ...log, error: err.message }),
      );
    if (payload.status === 'Canceled') return { completed: complete('canceled', [], undefined, 'task canceled before it ran') };
    const result = payload.job.operator === 'user' ? await this.runUserCode(payload, token) : await this.runBuiltin(payload, token);
    if (result.outcome === 'stopped') return { completed: Promise.resolve() }; // superseded: the newer attempt owns the task
    return { completed: complete(result.outcome, result.outcome === 'succeeded' ? result.pending : [], result.error, `task ${result.outcome}`) };
  }

  /**
   * A built-in operator: trusted platform code, run in this process with the object store. It
   * relays its own events (each emit resolves once accepted), and is aborted when the attempt is
   * canceled or superseded.
   */
  private async runBuiltin(payload: TaskPayload, token: string): Promise<{ outcome: 'succeeded' | 'failed' | 'canceled' | 'stopped'; pending: EmittedEvent[]; error?: string }> {
    const operator = this.options.builtins?.[payload.job.operator];
    if (!operator || !this.options.store) {
      return { outcome: 'failed', pending: [], error: `built-in operator "${payload.job.operator}" is not available in this build` };
    }
    const controller = new AbortController();
    let stopReason: 'canceled' | 'stopped' | undefined;
    const poll = setInterval(() => {
      this.client.attempt(token).then(
        (s) => {
          if (!s.current || s.cancel_requested) {
            stopReason = s.cancel_requested && s.current ? 'canceled' : 'stopped';
            controller.abort(new Error(`attempt ${stopReason}`));
          }
        },
        () => undefined,
      );
    }, this.options.statusPollMs);
    const scratchRoot = this.options.scratchDir ?? tmpdir();
    await mkdir(scratchRoot, { recursive: true });
    const scratchDir = await mkdtemp(join(scratchRoot, `task-${payload.task_id}-${payload.attempt}-`));
    const log = (message: string, fields: Record<string, unknown> = {}) =>
      this.logger.event('info', `Operator:${payload.job.operator}`, message, { task_id: payload.task_id, attempt: payload.attempt, ...fields });
    try {
      await operator({
        payload,
        store: this.options.store,
        tables: this.options.tables,
        scratchDir,
        env: { ...(payload.slot?.env ?? {}), ...(payload.slot?.secret_env ?? {}) },
        emit: async (events) => {
          if (events.length) await this.client.emit(token, events);
        },
        state: {
          read: <T>() => this.client.readState<T>(token),
          write: (expected, state) => this.client.writeState(token, expected, state),
        },
        signal: controller.signal,
        log,
      });
      return stopReason ? { outcome: stopReason, pending: [] } : { outcome: 'succeeded', pending: [] };
    } catch (err) {
      if (stopReason) return { outcome: stopReason, pending: [] };
      return { outcome: 'failed', pending: [], error: (err as Error).message };
    } finally {
      clearInterval(poll);
      await rm(scratchDir, { recursive: true, force: true });
    }
  }

  private async runUserCode(
    payload: TaskPayload,
    token: string,
  ): Promise<{ outcome: 'succeeded' | 'failed' | 'canceled' | 'stopped'; pending: EmittedEvent[]; error?: string }> {
    const env = { ...(payload.slot?.env ?? {}), ...(payload.slot?.secret_env ?? {}) };
    let child;
    try {
      child = spawnSandboxed({
        language: payload.job.language as 'javascript',
        entryPoint: payload.job.entry_point ?? '',
        codeRoot: this.options.codeRoot,
        env,
        sandboxUser: this.options.sandboxUser,
      });
    } catch (err) {
      return { outcome: 'failed', pending: [], error: (err as Error).message };
    }
    const task: UserTask = {
      task_id: payload.task_id,
      attempt: payload.attempt,
      dag: payload.dag,
      job: { name: payload.job.name, config: payload.job.config },
      input: payload.input,
      outputs: payload.outputs,
      idempotency: payload.idempotency,
    };
    child.stdin!.end(JSON.stringify({ type: 'task', task }) + '\n');

    let pending: EmittedEvent[] = [];
    let done = false;
    let error: string | undefined;
    let stopReason: 'canceled' | 'stopped' | undefined;
    let relay: Promise<unknown> = Promise.resolve();
    const stderr: string[] = [];
    child.stderr!.on('data', (c: Buffer) => stderr.length < 50 && stderr.push(c.toString().slice(0, 2000)));

    const flush = () => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      relay = relay.then(() => this.client.emit(token, batch)).catch((err: Error) => {
        error ??= `events were refused: ${err.message}`;
        child.kill('SIGKILL');
      });
    };

    const flusher = setInterval(flush, this.options.flushMs);
    const poll = setInterval(() => {
      this.client.attempt(token).then(
        (s) => {
          if (!s.current || s.cancel_requested) {
            stopReason = s.cancel_requested && s.current ? 'canceled' : 'stopped';
            child.kill('SIGKILL');
          }
        },
        () => undefined,
      );
    }, this.options.statusPollMs);

    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const msg = parseUserMessage(line);
      switch (msg.type) {
        case 'event':
          pending.push(msg.event as EmittedEvent);
          if (pending.length >= this.options.eventBatch) flush();
          break;
        case 'log':
          this.logger.event('info', 'UserCode', msg.message, { task_id: payload.task_id, level: msg.level });
          break;
        case 'done':
          done = true;
          break;
        case 'error':
          error = msg.message;
          break;
        case 'invalid':
          error ??= `user code broke the protocol: ${msg.reason}`;
          child.kill('SIGKILL');
          break;
      }
    });

    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    clearInterval(poll);
    clearInterval(flusher);
    await relay;
    if (stopReason) return { outcome: stopReason, pending: [] };
    if (error) return { outcome: 'failed', pending: [], error };
    if (exit.code === 0 && done) return { outcome: 'succeeded', pending };
    const tail = stderr.join('').trim().slice(-1000);
    return { outcome: 'failed', pending: [], error: `user code exited with ${exit.signal ?? exit.code} before finishing${tail ? `: ${tail}` : ''}` };
  }
}
