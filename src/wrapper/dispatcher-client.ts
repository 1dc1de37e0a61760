import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Outcome } from '../dispatcher/core/attempts.service';
import { type EmittedEvent, INTERNAL_BATCH_MAX, type TaskPayload } from '../dispatcher/core/task-payload';

export class DispatcherCallError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Pending<I, T> {
  item: I;
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

interface ItemResult {
  status_code?: number;
  error?: { code?: string; message?: string };
}

/**
 * Collects the calls made in one turn of the event loop and sends them together (like a job
 * queue's batched completion with no delay): a wrapper that received several messages fetches
 * them in one request, and operators that finish together complete in one. A request carries at
 * most INTERNAL_BATCH_MAX items; the rest go in the next.
 *
 * With `serial`, one request is in flight at a time, and the calls made while it is go together
 * in the next, as soon as it is answered. Completions are sent so: on a backlog, a wrapper's
 * completions then come in batches of several claims' worth instead of one request per claim,
 * and they no longer queue behind each other for their job's metering lock in the dispatcher
 * (docs/benchmarks.md, "Dispatch").
 */
class MicroBatch<I, T> {
  private queue: Pending<I, T>[] = [];
  private sending = false;

  constructor(
    private readonly send: (items: I[]) => Promise<(T | Error)[]>,
    private readonly serial = false,
  ) {}

  add(item: I): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.queue.push({ item, resolve, reject }) === 1 && !(this.serial && this.sending)) setImmediate(() => void this.flush());
    });
  }

  private async flush(): Promise<void> {
    if (this.queue.length === 0 || (this.serial && this.sending)) return;
    const batch = this.queue.splice(0, INTERNAL_BATCH_MAX);
    // What does not fit goes in its own request: now, or after this one when serial.
    if (this.queue.length && !this.serial) setImmediate(() => void this.flush());
    this.sending = true;
    try {
      const results = await this.send(batch.map((p) => p.item));
      batch.forEach((p, i) => {
        const r = results[i]!;
        if (r instanceof Error) p.reject(r);
        else p.resolve(r);
      });
    } catch (err) {
      for (const p of batch) p.reject(err as Error);
    } finally {
      this.sending = false;
      if (this.serial && this.queue.length) setImmediate(() => void this.flush());
    }
  }
}

/** How long a wrapper keeps retrying an answer the dispatcher could not give (it is down, or its database is). */
export const RETRY_FOR_MS = 30 * 60_000;
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5_000;

/** No answer, or one that says the dispatcher could not decide (5xx): worth asking again. A 4xx is an answer. */
export function isTransient(err: unknown): boolean {
  return !(err instanceof DispatcherCallError) || err.status >= 500 || err.status === 429;
}

/**
 * Calls `fn` until the dispatcher answers it, accepting or refusing: transient failures are retried
 * with capped exponential back-off (and jitter) for up to RETRY_FOR_MS, so a dispatcher or database
 * restart delays a task's completion instead of leaving it to its deadline.
 */
export async function untilAnswered<T>(fn: () => Promise<T>, retryForMs = RETRY_FOR_MS): Promise<T> {
  const giveUpAt = Date.now() + retryForMs;
  for (let delay = RETRY_FIRST_MS; ; delay = Math.min(RETRY_MAX_MS, delay * 2)) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || Date.now() + delay > giveUpAt) throw err;
      await new Promise((r) => setTimeout(r, delay / 2 + Math.random() * (delay / 2)));
    }
  }
}

const itemError = (r: ItemResult) => new DispatcherCallError(r.status_code ?? 500, r.error?.code ?? 'http_error', r.error?.message ?? 'failed');

/** The wrapper's side of /internal/*: the platform credential for task-fetch, the attempt token for the rest. */
export class DispatcherClient {
  private readonly fetches = new MicroBatch<string, TaskPayload>(async (ids) => {
    if (ids.length === 1) return [await this.call<TaskPayload>('GET', `/internal/task-fetch?task_id=${encodeURIComponent(ids[0]!)}`, this.platformCredential)];
    const { tasks } = await this.call<{ tasks: (TaskPayload & ItemResult)[] }>('POST', '/internal/task-fetch-batch', this.platformCredential, { task_ids: ids });
    return tasks.map((t) => (t.error ? itemError(t) : t));
  });

  private readonly completions = new MicroBatch<{ token: string; status: Outcome; error?: string }, { status: string }>(async (items) => {
    if (items.length === 1) {
      const [c] = items;
      return [await this.call<{ status: string }>('POST', '/internal/task-complete', c!.token, { status: c!.status, ...(c!.error ? { error: c!.error } : {}) })];
    }
    const body = { completions: items.map((c) => ({ attempt_token: c.token, status: c.status, ...(c.error ? { error: c.error } : {}) })) };
    const { results } = await this.call<{ results: ({ status: string } & ItemResult)[] }>('POST', '/internal/task-complete-batch', this.platformCredential, body);
    return results.map((r) => (r.error ? itemError(r) : r));
  }, true);

  private readonly url: URL;
  /** Kept-alive connections to the dispatcher: the task path makes many small calls. */
  private readonly agent: HttpAgent;

  constructor(
    baseUrl: string,
    private readonly platformCredential: string,
    private readonly nodeId: string,
  ) {
    this.url = new URL(baseUrl);
    this.agent = this.url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  }

  /** Closes idle kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  /**
   * The local transport's receive: up to `max` started attempts, claimed and bound to this
   * wrapper; with `waitMs`, the dispatcher holds an empty claim until work arrives (a long poll).
   */
  async claim(max: number, waitMs = 0): Promise<TaskPayload[]> {
    return (await this.call<{ tasks: TaskPayload[] }>('POST', '/internal/task-claim', this.platformCredential, { max, ...(waitMs > 0 ? { wait_ms: waitMs } : {}) })).tasks;
  }

  /** Fetches made in the same turn of the event loop go in one request. */
  fetchTask(taskId: string): Promise<TaskPayload> {
    return this.fetches.add(taskId);
  }

  /** Events are idempotent by their key: retried until the dispatcher accepts or refuses them. */
  emit(token: string, events: EmittedEvent[]): Promise<{ accepted: number; duplicates: number }> {
    return untilAnswered(() => this.call('POST', '/internal/events', token, { events }));
  }

  /**
   * Completions without final events go in batches, one request in flight at a time: those made
   * while one is in flight go together in the next. With events, each goes alone. A completion is
   * idempotent by its attempt, so it is retried until the dispatcher accepts or refuses it.
   */
  complete(token: string, status: Outcome, events: EmittedEvent[], error?: string): Promise<{ status: string }> {
    if (events.length === 0) return untilAnswered(() => this.completions.add({ token, status, error }));
    return untilAnswered(() => this.call('POST', '/internal/task-complete', token, { status, events, ...(error ? { error } : {}) }));
  }

  readState<T>(token: string): Promise<{ state: T | null; version: number }> {
    return this.call('GET', '/internal/operator-state', token);
  }

  writeState(token: string, expectedVersion: number, state: unknown): Promise<{ version: number }> {
    return this.call('PUT', '/internal/operator-state', token, { expected_version: expectedVersion, state });
  }

  /** The dataset version locations the attempt may read its input event's files from. */
  inputLocations(token: string): Promise<{ locations: string[] }> {
    return this.call('GET', '/internal/input-locations', token);
  }

  attempt(token: string): Promise<{ current: boolean; cancel_requested: boolean }> {
    return this.call('GET', '/internal/attempt', token);
  }

  /**
   * One call over node:http with a keep-alive agent (a fraction of fetch's CPU per call, which
   * the task path pays several times per task). 30 s timeout; an error answer becomes a
   * DispatcherCallError with the dispatcher's code and message.
   */
  private call<T>(method: string, path: string, token: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string | number> = { authorization: `Bearer ${token}`, 'x-trace-node': this.nodeId };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<T>((resolve, reject) => {
      const req = send(
        { protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, path: this.url.pathname.replace(/\/$/, '') + path, method, headers, agent: this.agent, timeout: 30_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            let parsed: unknown;
            try {
              const text = Buffer.concat(chunks).toString('utf8');
              parsed = text ? (JSON.parse(text) as unknown) : undefined;
            } catch {
              return reject(new DispatcherCallError(status, 'http_error', `HTTP ${status}: the answer is not JSON`));
            }
            if (status < 200 || status >= 300) {
              const err = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
              return reject(new DispatcherCallError(status, err?.code ?? 'http_error', err?.message ?? `HTTP ${status}`));
            }
            resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer from the dispatcher within 30 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
}
