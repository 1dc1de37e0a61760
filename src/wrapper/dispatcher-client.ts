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

/** The wrapper's side of /internal/*: the platform credential for task-fetch, the attempt token for the rest. */
export class DispatcherClient {
  constructor(
    private readonly baseUrl: string,
    private readonly platformCredential: string,
    private readonly nodeId: string,
  ) {}

  fetchTask(taskId: string): Promise<TaskPayload> {
    return this.call('GET', `/internal/task-fetch?task_id=${encodeURIComponent(taskId)}`, this.platformCredential);
  }

  emit(token: string, events: EmittedEvent[]): Promise<{ accepted: number; duplicates: number }> {
    return this.call('POST', '/internal/events', token, { events });
  }

  complete(token: string, status: 'succeeded' | 'failed' | 'canceled', events: EmittedEvent[], error?: string): Promise<{ status: string }> {
    return this.call('POST', '/internal/task-complete', token, { status, events, ...(error ? { error } : {}) });
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
