import type { Outcome } from '../dispatcher/core/attempts.service';
import type { EmittedEvent, TaskPayload } from '../dispatcher/core/task-payload';

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
 * them in one request, and operators that finish together complete in one.
 */
class MicroBatch<I, T> {
  private queue: Pending<I, T>[] = [];

  constructor(private readonly send: (items: I[]) => Promise<(T | Error)[]>) {}

  add(item: I): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.queue.push({ item, resolve, reject }) === 1) setImmediate(() => void this.flush());
    });
  }

  private async flush(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    try {
      const results = await this.send(batch.map((p) => p.item));
      batch.forEach((p, i) => {
        const r = results[i]!;
        if (r instanceof Error) p.reject(r);
        else p.resolve(r);
      });
    } catch (err) {
      for (const p of batch) p.reject(err as Error);
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
  });

  constructor(
    private readonly baseUrl: string,
    private readonly platformCredential: string,
    private readonly nodeId: string,
  ) {}

  /** Fetches made in the same turn of the event loop go in one request. */
  fetchTask(taskId: string): Promise<TaskPayload> {
    return this.fetches.add(taskId);
  }

  emit(token: string, events: EmittedEvent[]): Promise<{ accepted: number; duplicates: number }> {
    return this.call('POST', '/internal/events', token, { events });
  }

  /** Completions without final events made in the same turn go in one request; with events, each goes alone. */
  complete(token: string, status: Outcome, events: EmittedEvent[], error?: string): Promise<{ status: string }> {
    if (events.length === 0) return this.completions.add({ token, status, error });
    return this.call('POST', '/internal/task-complete', token, { status, events, ...(error ? { error } : {}) });
  }

  readState<T>(token: string): Promise<{ state: T | null; version: number }> {
    return this.call('GET', '/internal/operator-state', token);
  }

  writeState(token: string, expectedVersion: number, state: unknown): Promise<{ version: number }> {
    return this.call('PUT', '/internal/operator-state', token, { expected_version: expectedVersion, state });
  }

  attempt(token: string): Promise<{ current: boolean; cancel_requested: boolean }> {
    return this.call('GET', '/internal/attempt', token);
  }

  private async call<T>(method: string, path: string, token: string, body?: unknown): Promise<T> {
    const res = await fetch(this.baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'x-trace-node': this.nodeId, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as unknown) : undefined;
    if (!res.ok) {
      const err = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new DispatcherCallError(res.status, err?.code ?? 'http_error', err?.message ?? `HTTP ${res.status}`);
    }
    return parsed as T;
  }
}
