import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ObjectStore } from '../common/storage';
import type { BuiltinOperator } from '../operators/operator';
import type { PostgresDatasetWriter } from '../operators/tables/postgres-dataset-writer';
import type { EmittedEvent, TaskPayload } from '../dispatcher/core/task-payload';
import type { JsonLogger } from '../common/logging/json-logger';
import { DispatcherCallError, DispatcherClient } from './dispatcher-client';
import { parseUserMessage, UserTask } from './runtimes/protocol';
import type { Sandbox, SandboxedProcess } from './sandbox';

/** What user code may write (ADR 0020): each cap, when passed, fails the task naming it. */
export interface OutputCaps {
  /** The longest stdout line (one protocol message). */
  maxLineBytes: number;
  /** All of stdout over the task. */
  maxStdoutBytes: number;
  /** All of stderr over the task (only its tail is kept). */
  maxStderrBytes: number;
}

const STDERR_TAIL_CHARS = 8192;
/** After the code exits, how long its stdout may take to be read to the end (it is already written). */
const STDOUT_DRAIN_MAX_MS = 60_000;

/**
 * Splits a byte stream into lines without ever holding more than one line of at most `maxLine`
 * bytes: a longer line, or more than `maxTotal` bytes in all, ends the stream with `onOverflow`.
 */
export class BoundedLines {
  private parts: Buffer[] = [];
  private held = 0;
  private total = 0;
  private stopped = false;

  constructor(
    private readonly maxLine: number,
    private readonly maxTotal: number,
    private readonly onLine: (line: string) => void,
    private readonly onOverflow: (reason: string) => void,
  ) {}

  push(chunk: Buffer): void {
    if (this.stopped) return;
    this.total += chunk.length;
    if (this.total > this.maxTotal) return this.stop(`user code wrote more than ${this.maxTotal} bytes to stdout (TRACE_USER_OUTPUT_MAX_STDOUT_BYTES)`);
    let from = 0;
    for (let nl = chunk.indexOf(10, from); nl !== -1 && !this.stopped; nl = chunk.indexOf(10, from)) {
      if (this.held + nl - from > this.maxLine) return this.stop(this.tooLong());
      this.parts.push(chunk.subarray(from, nl));
      const line = Buffer.concat(this.parts).toString('utf8');
      this.parts = [];
      this.held = 0;
      from = nl + 1;
      if (line.trim()) this.onLine(line);
    }
    if (this.stopped || from >= chunk.length) return;
    this.held += chunk.length - from;
    if (this.held > this.maxLine) return this.stop(this.tooLong());
    // A copy: the rest of a large chunk must not keep the whole chunk alive.
    this.parts.push(Buffer.from(chunk.subarray(from)));
  }

  end(): void {
    if (this.stopped || this.held === 0) return;
    const line = Buffer.concat(this.parts).toString('utf8');
    this.parts = [];
    this.held = 0;
    if (line.trim()) this.onLine(line);
  }

  private tooLong(): string {
    return `user code wrote a stdout line longer than ${this.maxLine} bytes (TRACE_USER_OUTPUT_MAX_LINE_BYTES); one protocol message per line`;
  }

  private stop(reason: string): void {
    this.stopped = true;
    this.parts = [];
    this.held = 0;
    this.onOverflow(reason);
  }
}

export interface RunnerOptions {
  codeRoot: string;
  /** Starts user code confined (src/wrapper/sandbox.ts). */
  sandbox: Sandbox;
  output: OutputCaps;
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
  /** The one org whose code a single-tenant wrapper runs (TRACE_SANDBOX=none, or a user namespace that keeps supplementary groups). */
  private tenant?: string;

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
    const complete = (outcome: 'succeeded' | 'failed' | 'canceled', events: EmittedEvent[], error: string | undefined, message: string): Promise<void> =>
      this.client.complete(token, outcome, events, error).then(
        () => this.logger.event(outcome === 'succeeded' ? 'info' : 'warn', 'Wrapper', message, { ...log, error }),
        (err: Error) => {
          // Events the operator produced were refused with the completion: the task fails with the reason, not at its deadline.
          if (err instanceof DispatcherCallError && err.status === 400 && events.length > 0) return complete('failed', [], `events were refused: ${err.message}`.slice(0, 3500), 'task failed');
          // A stale attempt's completion is refused by design; anything else is worth a warning.
          this.logger.event(err instanceof DispatcherCallError && err.code === 'stale_attempt' ? 'info' : 'warn', 'Wrapper', 'completion not accepted', { ...log, error: err.message });
        },
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
    await mkdir(scratchRoot, { recursive: true, mode: 0o700 });
    const scratchDir = await mkdtemp(join(scratchRoot, `task-${payload.task_id}-${payload.attempt}-`));
    let readable: Promise<string[]> | undefined;
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
        // Asked at most once per attempt: the answer does not change while it runs.
        readableLocations: () => (readable ??= this.client.inputLocations(token).then((r) => r.locations)),
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
    const sandbox = this.options.sandbox;
    if (sandbox.singleTenant) {
      // Nothing separates two orgs' code on this wrapper (no namespaces, or a user namespace that
      // keeps the wrapper's supplementary groups): it serves one org.
      this.tenant ??= payload.org_id;
      if (this.tenant !== payload.org_id) {
        const why = sandbox.mode === 'none' ? 'without a sandbox (TRACE_SANDBOX=none)' : 'in a user namespace that keeps the wrapper\'s supplementary groups';
        return { outcome: 'failed', pending: [], error: `this wrapper runs user code ${why} and already serves another org; give each org its own wrapper or run it with namespaces and no supplementary groups` };
      }
    }
    const env = { ...(payload.slot?.env ?? {}), ...(payload.slot?.secret_env ?? {}) };
    const deadline = new Date(payload.deadline_at).getTime();
    let proc: SandboxedProcess;
    try {
      proc = await sandbox.spawn({
        language: payload.job.language as 'javascript',
        entryPoint: payload.job.entry_point ?? '',
        codeRoot: this.options.codeRoot,
        env,
        cpuSeconds: Math.max(1, (deadline - Date.now()) / 1000),
      });
    } catch (err) {
      return { outcome: 'failed', pending: [], error: (err as Error).message };
    }
    const child = proc.child;
    const task: UserTask = {
      task_id: payload.task_id,
      attempt: payload.attempt,
      dag: payload.dag,
      job: { name: payload.job.name, config: payload.job.config },
      input: payload.input,
      outputs: payload.outputs,
      idempotency: payload.idempotency,
    };
    child.stdin!.on('error', () => undefined); // code that exits without reading its task
    child.stdin!.end(JSON.stringify({ type: 'task', task }) + '\n');

    const caps = this.options.output;
    let pending: EmittedEvent[] = [];
    let done = false;
    let error: string | undefined;
    let stopReason: 'canceled' | 'stopped' | undefined;
    let relay: Promise<unknown> = Promise.resolve();
    let inFlight = 0;
    const fail = (message: string) => {
      error ??= message;
      child.stdout!.destroy();
      child.kill('SIGKILL');
    };

    // stderr: counted against its cap, only its tail kept for the error message.
    let stderrBytes = 0;
    let stderrTail = '';
    child.stderr!.on('data', (c: Buffer) => {
      stderrBytes += c.length;
      stderrTail = (stderrTail + c.toString()).slice(-STDERR_TAIL_CHARS);
      if (stderrBytes > caps.maxStderrBytes) fail(`user code wrote more than ${caps.maxStderrBytes} bytes to stderr (TRACE_USER_OUTPUT_MAX_STDERR_BYTES)`);
    });

    const flush = () => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      inFlight++;
      // Backpressure: while two batches are on their way, the code's output is not read.
      if (inFlight >= 2) child.stdout!.pause();
      relay = relay
        .then(() => this.client.emit(token, batch))
        .catch((err: Error) => fail(`events were refused: ${err.message}`))
        .finally(() => {
          inFlight--;
          if (inFlight < 2 && !child.stdout!.destroyed) child.stdout!.resume();
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
    // The wall clock: the attempt's deadline is the job's timeout_seconds.
    const overtime = setTimeout(() => fail(`user code ran past its deadline (${payload.deadline_at}; the job's timeout_seconds)`), Math.max(0, deadline - Date.now()));

    const onLine = (line: string) => {
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
          fail(`user code broke the protocol: ${msg.reason}`);
          break;
      }
    };
    const lines = new BoundedLines(caps.maxLineBytes, caps.maxStdoutBytes, onLine, (reason) => fail(reason));
    child.stdout!.on('data', (c: Buffer) => lines.push(c));
    child.stdout!.on('end', () => lines.end());

    const drained = new Promise<void>((resolve) => child.stdout!.once('close', resolve));
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    // What the code wrote before it exited may still be in the pipe (or waiting behind the relay's
    // backpressure): the outcome is decided only once stdout has been read to its end. Whatever the
    // code left running goes first (its namespace is already gone; without one, its process group),
    // so nothing else can hold the pipe open; the cap only guards against a platform bug.
    await proc.release();
    await Promise.race([drained, new Promise((r) => setTimeout(r, STDOUT_DRAIN_MAX_MS).unref())]);
    clearInterval(poll);
    clearInterval(flusher);
    clearTimeout(overtime);
    await relay;
    if (stopReason) return { outcome: stopReason, pending: [] };
    if (error) return { outcome: 'failed', pending: [], error };
    if (exit.code === 0 && done) return { outcome: 'succeeded', pending };
    const tail = stderrTail.trim().slice(-1000);
    return { outcome: 'failed', pending: [], error: `user code exited with ${exit.signal ?? exit.code} before finishing${tail ? `: ${tail}` : ''}` };
  }
}
