import { ChildProcess, execFile, fork } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { JsonLogger } from '../common/logging/json-logger';
import type { WorkerFailure, WorkerReply, WorkerRequest } from './query-worker-protocol';

const WORKER_MODULE = join(__dirname, 'query-worker.js');
const MiB = 2 ** 20;
/** How long an unanswered request runs past its timeout (after the interrupt) before its worker is killed. */
const KILL_GRACE_MS = 250;
const START_TIMEOUT_MS = 30_000;
/** Workers beyond the warm spares are stopped after this long idle. */
const IDLE_MS = 30_000;
/** Query workers yield the CPU to the serving process (registry, dispatcher, this API) when both want it. */
const WORKER_NICENESS = 10;

const execFileAsync = promisify(execFile);

/** What became of one request. `timeout`: it did not answer in time, was interrupted, then killed. */
export type WorkerOutcome<T> =
  | { kind: 'done'; value: T }
  | { kind: 'failed'; failure: WorkerFailure }
  | { kind: 'timeout' }
  | { kind: 'died'; code: number | null; signal: NodeJS.Signals | null; outOfMemory: boolean };

export class QueryWorkerUnavailable extends Error {
  constructor(readonly reason: 'busy' | 'not_started' | 'stopped', message: string) {
    super(message);
    this.name = 'QueryWorkerUnavailable';
  }
}

export interface QueryWorkerPoolOptions {
  mode: 'interactive' | 'batch';
  /** The most workers (so queries) at once. */
  size: number;
  /** Idle workers kept started, so a query does not wait for one to start. */
  spare: number;
  threads: number;
  memoryLimitBytes: number;
  logger: JsonLogger;
}

/**
 * The OS ceiling on a worker's address space above its size at rest: DuckDB's memory limit, plus
 * a quarter of it (at least 256 MiB) for what DuckDB does not count and the result's conversion
 * to JSON, plus 32 MiB per DuckDB thread (stacks, allocator arenas). Measured in
 * docs/architecture/query_service.md#how-a-query-runs.
 */
export const addressSpaceHeadroom = (memoryLimitBytes: number, threads: number) => memoryLimitBytes + Math.max(256 * MiB, memoryLimitBytes / 4) + threads * 32 * MiB;

/** Every worker process this process started and that has not exited: killed if this process exits first. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => live.forEach((c) => c.kill('SIGKILL')));
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** One worker process, serving one request at a time. */
export class QueryWorker {
  readonly pid: number;
  /** VmSize at rest, once ready. */
  baseline = 0;
  idleSince = 0;
  dead = false;
  readonly exited: Promise<void>;
  private readonly ready: Promise<number>;
  private nextId = 1;
  private pending: { id: number; settle(outcome: WorkerOutcome<unknown>): void } | undefined;
  private stderrTail = '';
  private killedBy: 'timeout' | 'stop' | 'start' | undefined;
  /** VmSize after the last request. */
  private vmSize = 0;

  private constructor(
    private readonly child: ChildProcess,
    private readonly logger: JsonLogger,
    mode: string,
  ) {
    this.pid = child.pid ?? 0;
    let ready: (vmSize: number) => void;
    let notReady: (err: Error) => void;
    this.ready = new Promise((resolve, reject) => ((ready = resolve), (notReady = reject)));
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    // A failed spawn, or a message the channel could not take: the exit that follows (if any) settles what is pending.
    child.on('error', (err) => notReady(err));
    child.on('message', (m: WorkerReply) => {
      if (m.kind === 'ready') return ready(m.vmSize);
      if (!this.pending || m.id !== this.pending.id) return;
      this.vmSize = m.vmSize;
      this.pending.settle(m.kind === 'done' ? { kind: 'done', value: m.value } : { kind: 'failed', failure: m.failure });
    });
    child.stdout!.resume(); // it writes nothing there; a full pipe must not stall it
    child.stderr!.on('data', (chunk: Buffer) => (this.stderrTail = (this.stderrTail + chunk.toString()).slice(-4096)));
    child.once('exit', (code, signal) => {
      this.dead = true;
      notReady(new Error(`exited while starting (code ${code}, signal ${signal}): ${this.stderrTail.slice(-500)}`));
      // A SIGKILL we did not send is the kernel's OOM killer; V8 or the allocator giving up at the address-space ceiling says so on stderr.
      const outOfMemory = (signal === 'SIGKILL' && !this.killedBy) || /out of memory|allocation failed|bad_alloc/i.test(this.stderrTail);
      this.logger.event(this.killedBy === 'stop' ? 'debug' : 'warn', 'QueryWorker', 'query worker exited', {
        mode,
        pid: this.pid,
        code,
        signal,
        killed_by: this.killedBy ?? null,
        out_of_memory: outOfMemory,
        ...(this.killedBy ? {} : { stderr: this.stderrTail.slice(-1000) }),
      });
      this.pending?.settle({ kind: 'died', code, signal, outOfMemory });
    });
  }

  /** Forks a worker, waits for it to be ready, lowers its priority and caps its address space. */
  static async start(options: QueryWorkerPoolOptions): Promise<QueryWorker> {
    const started = performance.now();
    const child = fork(WORKER_MODULE, [`--threads=${options.threads}`], {
      serialization: 'advanced',
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      // Nothing of this process's environment (database URL, keys) reaches user SQL's process.
      // Two glibc arenas: one per thread would reserve address space the ceiling counts (DuckDB itself uses jemalloc).
      env: { MALLOC_ARENA_MAX: '2' },
      execArgv: [],
      cwd: '/',
    });
    track(child);
    const worker = new QueryWorker(child, options.logger, options.mode);
    let timer: NodeJS.Timeout | undefined;
    try {
      const baseline = await Promise.race([
        worker.ready,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`not ready within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS))),
      ]);
      const limit = Math.floor(baseline + addressSpaceHeadroom(options.memoryLimitBytes, options.threads));
      setPriority(worker.pid, WORKER_NICENESS);
      // Soft and hard: the worker cannot raise it back.
      await execFileAsync('prlimit', ['--pid', String(worker.pid), `--as=${limit}:${limit}`]);
      const applied = /^Max address space\s+(\d+)\s+(\d+)\s+bytes/m.exec(await readFile(`/proc/${worker.pid}/limits`, 'utf8'));
      if (!applied || Number(applied[1]) !== limit || Number(applied[2]) !== limit) throw new Error('the address-space limit did not take');
      worker.baseline = worker.vmSize = baseline;
      options.logger.event('info', 'QueryWorker', 'query worker ready', {
        mode: options.mode,
        pid: worker.pid,
        start_ms: Math.round(performance.now() - started),
        vm_size_mb: Math.round(baseline / MiB),
        address_space_limit_mb: Math.round(limit / MiB),
      });
      return worker;
    } catch (err) {
      worker.kill('start');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One request. Past `timeoutMs` the worker is asked to interrupt it; if it has not answered
   * {@link KILL_GRACE_MS} later, it is killed and the outcome is `timeout` at once.
   */
  request<T>(message: DistributiveOmit<WorkerRequest, 'id'>, timeoutMs: number): Promise<WorkerOutcome<T>> {
    if (!this.usable) return Promise.resolve({ kind: 'died', code: null, signal: null, outOfMemory: false });
    if (this.pending) throw new Error('a query worker serves one request at a time');
    const id = this.nextId++;
    return new Promise<WorkerOutcome<T>>((resolve, reject) => {
      let killTimer: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        this.send({ kind: 'interrupt', id });
        killTimer = setTimeout(() => {
          this.kill('timeout');
          settle({ kind: 'timeout' });
        }, KILL_GRACE_MS);
      }, timeoutMs);
      const settle = (outcome: WorkerOutcome<unknown>) => {
        if (this.pending?.id !== id) return;
        this.pending = undefined;
        clearTimeout(timer);
        clearTimeout(killTimer);
        resolve(outcome as WorkerOutcome<T>);
      };
      this.pending = { id, settle };
      try {
        // A closed channel is reported to the callback (the exit settles the request); what cannot be serialized throws here.
        this.child.send({ ...message, id } as WorkerRequest, () => undefined);
      } catch (err) {
        this.pending = undefined;
        clearTimeout(timer);
        reject(err as Error);
      }
    });
  }

  /** True when the last query left the worker's address space far above its size at rest (so its headroom short). */
  bloated(memoryLimitBytes: number): boolean {
    return this.vmSize > this.baseline + memoryLimitBytes / 2;
  }

  get lastVmSize(): number {
    return this.vmSize;
  }

  /** False once it exited or was told to (its exit event may come later). */
  get usable(): boolean {
    return !this.dead && !this.killedBy;
  }

  kill(by: 'timeout' | 'stop' | 'start'): void {
    if (this.dead) return;
    this.killedBy ??= by;
    this.child.kill('SIGKILL');
  }

  private send(message: WorkerRequest): void {
    // A closed channel means the worker is exiting: its exit settles the request.
    const ignore = () => undefined;
    try {
      this.child.send(message, ignore);
    } catch {
      ignore();
    }
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

interface Waiter {
  resolve(worker: QueryWorker): void;
  reject(err: Error): void;
  timer?: NodeJS.Timeout;
}

/**
 * Warm worker processes for one mode (interactive or batch): at most `size` at once, `spare`
 * kept started while idle. A query takes one ({@link use}), waiting in line when all are busy; a
 * worker that died is replaced, and one whose address space stayed grown after a query is
 * replaced too, so every query starts with its full headroom.
 */
export class QueryWorkerPool {
  private readonly idle: QueryWorker[] = [];
  private readonly busy = new Set<QueryWorker>();
  private readonly waiters: Waiter[] = [];
  private starting = 0;
  private stopped = false;
  private readonly reaper: NodeJS.Timeout;

  constructor(private readonly options: QueryWorkerPoolOptions) {
    this.reaper = setInterval(() => this.reapIdle(), IDLE_MS / 3);
    this.reaper.unref();
  }

  /** Starts the spares. */
  warm(): void {
    this.topUp();
  }

  /** Runs `fn` with a worker of its own; waits at most `waitMs` for one (undefined: as long as it takes). */
  async use<T>(waitMs: number | undefined, fn: (worker: QueryWorker) => Promise<T>): Promise<T> {
    const worker = await this.acquire(waitMs);
    try {
      return await fn(worker);
    } finally {
      this.release(worker);
    }
  }

  /** Kills every worker; waiting queries are refused. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.reaper);
    for (const w of this.waiters.splice(0)) this.refuse(w, new QueryWorkerUnavailable('stopped', 'the Query Service is stopping'));
    const all = [...this.idle.splice(0), ...this.busy];
    for (const w of all) w.kill('stop');
    await Promise.all(all.map((w) => w.exited));
  }

  private acquire(waitMs: number | undefined): Promise<QueryWorker> {
    if (this.stopped) return Promise.reject(new QueryWorkerUnavailable('stopped', 'the Query Service is stopping'));
    const worker = this.idle.pop();
    if (worker) {
      this.busy.add(worker);
      this.topUp();
      return Promise.resolve(worker);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject };
      if (waitMs !== undefined) {
        waiter.timer = setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new QueryWorkerUnavailable('busy', `all ${this.options.size} ${this.options.mode} query workers stayed busy for ${waitMs} ms`));
        }, waitMs);
      }
      this.waiters.push(waiter);
      this.topUp();
    });
  }

  private release(worker: QueryWorker): void {
    this.busy.delete(worker);
    if (!worker.usable) return this.topUp();
    if (worker.bloated(this.options.memoryLimitBytes)) {
      this.options.logger.event('info', 'QueryWorker', 'query worker recycled', {
        mode: this.options.mode,
        pid: worker.pid,
        vm_size_mb: Math.round(worker.lastVmSize / MiB),
        baseline_mb: Math.round(worker.baseline / MiB),
      });
      worker.kill('stop');
      return this.topUp();
    }
    this.offer(worker);
  }

  private offer(worker: QueryWorker): void {
    if (this.stopped || !worker.usable) {
      worker.kill('stop');
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      this.busy.add(worker);
      waiter.resolve(worker);
      return;
    }
    worker.idleSince = Date.now();
    this.idle.push(worker);
  }

  /** Enough workers started or starting for the spares and everyone waiting, within the size. */
  private topUp(): void {
    if (this.stopped) return;
    const total = () => this.idle.length + this.busy.size + this.starting;
    while (this.idle.length + this.starting < this.options.spare + this.waiters.length && total() < this.options.size) this.spawn();
  }

  private spawn(): void {
    this.starting++;
    QueryWorker.start(this.options).then(
      (worker) => {
        this.starting--;
        void worker.exited.then(() => this.onExit(worker));
        this.offer(worker);
      },
      (err: Error) => {
        this.starting--;
        this.options.logger.event('error', 'QueryWorker', 'query worker failed to start', { mode: this.options.mode, error: err.message });
        // Most likely systematic (no prlimit, no /proc): refuse who waits rather than retry in a loop.
        for (const w of this.waiters.splice(0)) this.refuse(w, new QueryWorkerUnavailable('not_started', 'no query worker could be started'));
      },
    );
  }

  private onExit(worker: QueryWorker): void {
    const i = this.idle.indexOf(worker);
    if (i >= 0) this.idle.splice(i, 1);
    this.busy.delete(worker);
    this.topUp();
  }

  private reapIdle(): void {
    const cutoff = Date.now() - IDLE_MS;
    // idle is most-recently-used last: the front has waited longest.
    while (this.idle.length > this.options.spare && this.idle[0]!.idleSince < cutoff) this.idle.shift()!.kill('stop');
  }

  private refuse(waiter: Waiter, err: Error): void {
    clearTimeout(waiter.timer);
    waiter.reject(err);
  }
}
