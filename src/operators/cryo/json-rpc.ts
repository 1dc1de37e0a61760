/** One JSON-RPC call in a batch. */
export interface RpcCall {
  method: string;
  params: unknown[];
}

export class RpcError extends Error {
  constructor(
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

export interface JsonRpcOptions {
  /** Calls per HTTP request (JSON-RPC batch). */
  batchSize: number;
  /** HTTP requests per second, across everything this client sends. 0: unlimited. */
  requestsPerSecond: number;
  /** Retries of a transient failure (network, HTTP 429/5xx, rate-limit errors), with exponential back-off. */
  retries: number;
  timeoutMs: number;
  signal?: AbortSignal;
}

/** JSON-RPC error codes providers use for "try again later". */
const TRANSIENT_CODES = new Set([-32005, -32603, -32000, 429]);

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason as Error)), { once: true });
  });

/**
 * An Ethereum JSON-RPC client for ingestion: batches calls, paces requests to a rate limit, and
 * retries transient failures; a permanent error (bad params, unknown method) fails at once. The
 * URL carries the endpoint's key when the provider wants it there; it never appears in errors.
 */
export class JsonRpcClient {
  private nextSlot = 0;
  private id = 0;
  /** Requests and calls sent, for the benchmark and logs. */
  readonly stats = { requests: 0, calls: 0, retries: 0 };

  constructor(
    private readonly url: string,
    private readonly options: JsonRpcOptions,
    private readonly headers: Record<string, string> = {},
  ) {}

  async call<T>(method: string, params: unknown[]): Promise<T> {
    const [result] = await this.batch<T>([{ method, params }]);
    return result!;
  }

  /** Results in the order of the calls; splits into batches of `batchSize`, sent in parallel. */
  async batch<T>(calls: RpcCall[]): Promise<T[]> {
    const chunks: RpcCall[][] = [];
    for (let i = 0; i < calls.length; i += this.options.batchSize) chunks.push(calls.slice(i, i + this.options.batchSize));
    const results = await Promise.all(chunks.map((c) => this.send<T>(c)));
    return results.flat();
  }

  private async pace(): Promise<void> {
    if (!this.options.requestsPerSecond) return;
    const interval = 1000 / this.options.requestsPerSecond;
    const now = Date.now();
    const slot = Math.max(now, this.nextSlot);
    this.nextSlot = slot + interval;
    if (slot > now) await sleep(slot - now, this.options.signal);
  }

  private async send<T>(calls: RpcCall[]): Promise<T[]> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.sendOnce<T>(calls);
      } catch (err) {
        const transient = err instanceof RpcError ? err.transient : !(this.options.signal?.aborted ?? false);
        if (!transient || attempt >= this.options.retries) throw err;
        this.stats.retries++;
        await sleep(Math.min(10_000, 200 * 2 ** attempt), this.options.signal);
      }
    }
  }

  private async sendOnce<T>(calls: RpcCall[]): Promise<T[]> {
    await this.pace();
    const first = this.id;
    const body = calls.map((c, i) => ({ jsonrpc: '2.0', id: first + i, method: c.method, params: c.params }));
    this.id += calls.length;
    this.stats.requests++;
    this.stats.calls += calls.length;
    const signals = [AbortSignal.timeout(this.options.timeoutMs), ...(this.options.signal ? [this.options.signal] : [])];
    let res: Response;
    try {
      res = await fetch(this.url, { method: 'POST', headers: { 'content-type': 'application/json', ...this.headers }, body: JSON.stringify(body), signal: AbortSignal.any(signals) });
    } catch (err) {
      if (this.options.signal?.aborted) throw this.options.signal.reason as Error;
      throw new RpcError(`RPC request failed: ${(err as Error).message}`, true);
    }
    if (!res.ok) {
      throw new RpcError(`RPC endpoint answered HTTP ${res.status}`, res.status === 429 || res.status >= 500);
    }
    let parsed: unknown;
    try {
      parsed = await res.json();
    } catch {
      throw new RpcError('RPC endpoint answered something that is not JSON', true);
    }
    const replies = Array.isArray(parsed) ? parsed : [parsed];
    const byId = new Map<number, { result?: unknown; error?: { code?: number; message?: string } }>();
    for (const r of replies as { id: number; result?: unknown; error?: { code?: number; message?: string } }[]) byId.set(r.id, r);
    return calls.map((c, i) => {
      const r = byId.get(first + i);
      if (!r) throw new RpcError(`RPC endpoint answered no result for ${c.method}`, true);
      if (r.error) {
        const code = r.error.code ?? 0;
        throw new RpcError(`${c.method} failed: ${r.error.message ?? 'error'} (code ${code})`, TRANSIENT_CODES.has(code) || /rate|limit|timeout|busy/i.test(r.error.message ?? ''));
      }
      return r.result as T;
    });
  }
}
