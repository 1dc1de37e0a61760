import { BeforeApplicationShutdown, Inject, Injectable, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DataSource } from 'typeorm';
import { sql as query, sqlOne } from '../common/db';
import type { Principal } from '../common/identity';
import { NodeRegistry } from '../common/lifecycle';
import { JsonLogger } from '../common/logging/json-logger';
import { OBJECT_STORE, type ObjectStore } from '../common/storage';
import { projectRoot, TraceConfig } from '../config';
import { readablePredicate } from '../registry/datasets/dataset-access';
import { PathScrubber } from './path-scrubber';
import { QueryErrors } from './query-errors';
import { QueryWorker, QueryWorkerPool, QueryWorkerUnavailable, type WorkerOutcome } from './query-worker-pool';
import type { CopiedColumnType, DatasetSource, RowsResult, RunSpec } from './query-worker-protocol';

interface Pinned {
  dataset_name: string;
  dataset_uuid: string;
  backend: 'postgres' | 's3';
  dataset_version: string;
  location: string;
}

/** A query gated and pinned, its datasets read or listed, ready for a worker. */
interface PreparedQuery {
  pinned: Pinned[];
  datasets: DatasetSource[];
  readDirs: string[];
  scratch: string;
  close(): Promise<void>;
}

interface QueryRunRow {
  id: string;
  status: 'running' | 'succeeded' | 'failed';
  pinned: Record<string, string>;
  row_count: string | null;
  result_key: string | null;
  error: string | null;
  created_at: Date;
  finished_at: Date | null;
  orphaned?: boolean;
}

export interface QueryRunView {
  query_id: string;
  status: 'running' | 'succeeded' | 'failed';
  pinned: Record<string, string>;
  row_count: number | null;
  result: { format: 'parquet'; key: string | null; url: string } | null;
  error: string | null;
  created_at: Date;
  finished_at: Date | null;
}

/** The limits one mode runs under, and the settings that set them (named in the errors). */
interface ModeLimits {
  timeoutMs: number;
  timeoutSetting: string;
  memoryLimit: string;
  memorySetting: string;
}

const pinnedMap = (pinned: Pinned[]) => Object.fromEntries(pinned.map((p) => [p.dataset_name, p.dataset_version]));

/** Postgres column type → DuckDB type for a pinned Postgres dataset copied into the query. */
function duckType(pg: string): CopiedColumnType {
  if (/^(smallint|integer|bigint)$/.test(pg)) return 'BIGINT';
  if (pg === 'numeric') return 'HUGEINT';
  if (/^(real|double precision)$/.test(pg)) return 'DOUBLE';
  if (pg === 'boolean') return 'BOOLEAN';
  if (pg === 'bytea') return 'BLOB';
  return 'VARCHAR'; // text, dates and timestamps (as ISO text), json, …
}

/**
 * The Query Service (docs/architecture/query_service.md). The SQL is gated on its parse tree, the
 * datasets it names are resolved through the one read rule and each pinned to its current version
 * once, at the start; then a worker process runs it in a fresh, locked DuckDB with one view per
 * dataset, under the mode's limits. This process never opens DuckDB for user SQL: it pins, reads
 * Postgres, lists and fetches files, records batch runs, and waits on the worker.
 */
@Injectable()
export class QueryService implements OnModuleInit, BeforeApplicationShutdown, OnApplicationShutdown {
  private readonly running = new Map<string, number>();
  private readonly batches = new Map<string, number>();
  private readonly background = new Set<Promise<void>>();
  private readonly interactivePool: QueryWorkerPool;
  private readonly batchPool: QueryWorkerPool;
  private readonly paths: PathScrubber;
  private readonly interactiveLimits: ModeLimits;
  private readonly batchLimits: ModeLimits;

  constructor(
    private readonly db: DataSource,
    @Inject(OBJECT_STORE) private readonly store: ObjectStore,
    private readonly config: TraceConfig,
    private readonly node: NodeRegistry,
    logger: JsonLogger,
  ) {
    const q = config.query;
    this.interactivePool = new QueryWorkerPool({ mode: 'interactive', size: q.workers, spare: 1, threads: q.threads, memoryLimitBytes: q.memoryLimitBytes, logger });
    this.batchPool = new QueryWorkerPool({ mode: 'batch', size: q.batch.workers, spare: 0, threads: q.threads, memoryLimitBytes: q.batch.memoryLimitBytes, logger });
    this.interactiveLimits = { timeoutMs: q.timeoutMs, timeoutSetting: 'TRACE_QUERY_TIMEOUT_MS', memoryLimit: q.memoryLimit, memorySetting: 'TRACE_QUERY_MEMORY_LIMIT' };
    this.batchLimits = { timeoutMs: q.batch.timeoutMs, timeoutSetting: 'TRACE_QUERY_BATCH_TIMEOUT_MS', memoryLimit: q.batch.memoryLimit, memorySetting: 'TRACE_QUERY_BATCH_MEMORY_LIMIT' };
    const storage = config.storage;
    this.paths = PathScrubber.forServer({
      objectStore: storage.kind === 'local' ? storage.dir : undefined,
      scratch: storage.scratchDir,
      data: config.dataDir,
      other: [config.dispatch.codeRoot, projectRoot()],
    });
  }

  onModuleInit(): void {
    this.interactivePool.warm();
    this.batchPool.warm();
  }

  /**
   * An interactive query's answer, as JSON text: the rows arrive from the worker already
   * serialized (and bounded by TRACE_QUERY_MAX_RESULT_SIZE), and are not parsed here.
   */
  async interactive(principal: Principal, sql: string, params: unknown[] = []): Promise<string> {
    const started = performance.now();
    const q = this.config.query;
    const release = this.admit(this.running, principal.orgId, q.maxConcurrentPerOrg, 'queries');
    try {
      return await this.withWorker(this.interactivePool, q.workers, 'TRACE_QUERY_WORKERS', q.timeoutMs, async (worker) => {
        const prepared = await this.prepare(principal, await this.gate(worker, sql));
        try {
          const spec = this.spec(sql, params, prepared, q.memoryLimit, { kind: 'rows', maxRows: q.maxRows, maxBytes: q.maxResultBytes });
          const rows = this.answer<RowsResult>(await worker.request({ kind: 'run', spec }, q.timeoutMs), this.interactiveLimits);
          return `{"columns":${JSON.stringify(rows.columns)},"rows":${rows.rowsJson},"row_count":${rows.rowCount},"truncated":${rows.truncated},"pinned":${JSON.stringify(pinnedMap(prepared.pinned))},"elapsed_ms":${Math.round(performance.now() - started)}}`;
        } finally {
          await prepared.close();
        }
      });
    } finally {
      release();
    }
  }

  /**
   * Batch mode: the SQL is gated and its datasets pinned now (errors answer at once); the query
   * then runs in the background in a batch worker under the batch limits and its whole result goes
   * to the object store as Parquet. Answers the run's id.
   */
  async submit(principal: Principal, sql: string, params: unknown[] = []): Promise<{ query_id: string; status: 'running'; pinned: Record<string, string> }> {
    const limits = this.config.query.batch;
    const release = this.admit(this.batches, principal.orgId, limits.maxConcurrentPerOrg, 'batch queries');
    let prepared: PreparedQuery;
    try {
      // The gate is a parse: it takes an interactive worker for a moment, not a batch one for as long as the run.
      const names = await this.withWorker(this.interactivePool, this.config.query.workers, 'TRACE_QUERY_WORKERS', this.config.query.timeoutMs, (worker) => this.gate(worker, sql));
      prepared = await this.prepare(principal, names);
    } catch (err) {
      release();
      throw err;
    }
    const pinned = pinnedMap(prepared.pinned);
    const [run] = await query<{ id: string }>(
      this.db,
      `INSERT INTO query_runs (org_id, user_id, sql, pinned, status, node_id) VALUES ($1, $2, $3, $4, 'running', $5) RETURNING id`,
      [principal.orgId, principal.userId, sql, JSON.stringify(pinned), this.node.nodeId],
    );
    const id = run!.id;
    const key = `org/${principal.orgId}/query/${id}/result.parquet`;
    const work = (async () => {
      try {
        const out = join(prepared.scratch, 'result.parquet');
        const spec = this.spec(sql, params, prepared, limits.memoryLimit, { kind: 'parquet', path: out });
        // Waits its turn for a batch worker (TRACE_QUERY_BATCH_WORKERS); the run shows `running` meanwhile.
        const written = await this.withWorker(this.batchPool, limits.workers, 'TRACE_QUERY_BATCH_WORKERS', undefined, async (worker) =>
          this.answer<{ rowCount: number }>(await worker.request({ kind: 'run', spec }, limits.timeoutMs), this.batchLimits),
        );
        await this.store.putFile(key, out);
        await this.db.query(`UPDATE query_runs SET status = 'succeeded', result_key = $2, row_count = $3, finished_at = now() WHERE id = $1`, [id, key, written.rowCount]);
      } catch (err) {
        const message = this.paths.scrub((err as Error).message).slice(0, 2000);
        await this.db.query(`UPDATE query_runs SET status = 'failed', error = $2, finished_at = now() WHERE id = $1`, [id, message]);
      } finally {
        await prepared.close();
        release();
      }
    })();
    this.background.add(work);
    void work.finally(() => this.background.delete(work));
    return { query_id: id, status: 'running', pinned };
  }

  /** A batch run, to the user who submitted it only (another user gets 404, as for anything unknown). */
  async status(principal: Principal, id: string): Promise<QueryRunView> {
    const run = await this.runOf(principal, id);
    return {
      query_id: run.id,
      status: run.status,
      pinned: run.pinned,
      row_count: run.row_count === null ? null : Number(run.row_count),
      result: run.status === 'succeeded' ? { format: 'parquet', key: run.result_key, url: `/v1/query/${run.id}/result` } : null,
      error: run.error,
      created_at: run.created_at,
      finished_at: run.finished_at,
    };
  }

  /** The Parquet bytes of a finished batch run's result. */
  async result(principal: Principal, id: string): Promise<Buffer> {
    const run = await this.runOf(principal, id);
    if (run.status !== 'succeeded' || !run.result_key) throw QueryErrors.resultNotReady(id, run.status);
    const bytes = await this.store.get(run.result_key);
    if (!bytes) throw QueryErrors.resultGone(id);
    return bytes;
  }

  /** A draining process finishes the batch queries it accepted (their workers are still there). */
  async beforeApplicationShutdown(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }

  /** Then no worker outlives the process. */
  async onApplicationShutdown(): Promise<void> {
    await Promise.all([this.interactivePool.stop(), this.batchPool.stop()]);
  }

  private async runOf(principal: Principal, id: string): Promise<QueryRunRow> {
    const row = await sqlOne<QueryRunRow>(
      this.db,
      `SELECT r.id, r.status, r.pinned, r.row_count, r.result_key, r.error, r.created_at, r.finished_at,
              (r.status = 'running' AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = r.node_id)) AS orphaned
         FROM query_runs r WHERE r.id = $1 AND r.org_id = $2 AND r.user_id = $3`,
      [id, principal.orgId, principal.userId],
    );
    if (!row) throw QueryErrors.runNotFound(id);
    if (row.orphaned) {
      // The process running it is gone: it will never finish.
      await this.db.query(`UPDATE query_runs SET status = 'failed', error = 'the process running it stopped', finished_at = now() WHERE id = $1 AND status = 'running'`, [id]);
      return { ...row, status: 'failed', error: 'the process running it stopped' };
    }
    return row;
  }

  private admit(counter: Map<string, number>, orgId: string, max: number, what: string): () => void {
    const inFlight = counter.get(orgId) ?? 0;
    if (inFlight >= max) throw QueryErrors.tooMany(inFlight, what, max);
    counter.set(orgId, inFlight + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (counter.get(orgId) ?? 1) - 1;
      if (n > 0) counter.set(orgId, n);
      else counter.delete(orgId);
    };
  }

  /** `fn` with a worker of the pool; a pool that stays busy past `waitMs`, or cannot start workers, answers 503. */
  private async withWorker<T>(pool: QueryWorkerPool, size: number, setting: string, waitMs: number | undefined, fn: (worker: QueryWorker) => Promise<T>): Promise<T> {
    try {
      return await pool.use(waitMs, fn);
    } catch (err) {
      if (!(err instanceof QueryWorkerUnavailable)) throw err;
      throw err.reason === 'busy' ? QueryErrors.busy(size, setting, waitMs ?? 0) : QueryErrors.unavailable();
    }
  }

  /** The gate, in the worker: the dataset names the SQL reads, or its refusal. */
  private async gate(worker: QueryWorker, sql: string): Promise<string[]> {
    return this.answer<string[]>(await worker.request({ kind: 'gate', sql }, this.config.query.timeoutMs), this.interactiveLimits);
  }

  /** A worker's outcome → the value, or the error the client gets (server paths scrubbed). */
  private answer<T>(outcome: WorkerOutcome<T>, limits: ModeLimits): T {
    switch (outcome.kind) {
      case 'done':
        return outcome.value;
      case 'timeout':
        throw QueryErrors.timeout(limits.timeoutMs, limits.timeoutSetting);
      case 'died':
        if (outcome.outOfMemory) throw QueryErrors.memoryLimit(limits.memoryLimit, limits.memorySetting, 'the process running it ran out of memory');
        throw QueryErrors.workerDied(outcome.signal ? `signal ${outcome.signal}` : `exit code ${outcome.code}`);
      case 'failed': {
        const f = outcome.failure;
        if (f.reason === 'interrupted') throw QueryErrors.timeout(limits.timeoutMs, limits.timeoutSetting);
        if (f.reason === 'memory') throw QueryErrors.memoryLimit(limits.memoryLimit, limits.memorySetting, this.paths.scrub(f.message));
        if (f.reason === 'result_too_large') throw QueryErrors.resultTooLarge(this.config.query.maxResultSize);
        if (f.reason === 'refused') throw QueryErrors.refused(f.code, this.paths.scrub(f.message));
        throw QueryErrors.failed(this.paths.scrub(f.message));
      }
    }
  }

  private spec(sql: string, params: unknown[], q: PreparedQuery, memoryLimit: string, output: RunSpec['output']): RunSpec {
    return { sql, params, threads: this.config.query.threads, memoryLimit, scratch: q.scratch, readDirs: q.readDirs, datasets: q.datasets, output };
  }

  /** Pin the names, and gather what each view is made of, in a scratch directory of the query's own. */
  private async prepare(principal: Principal, names: string[]): Promise<PreparedQuery> {
    await mkdir(this.config.storage.scratchDir, { recursive: true });
    const scratch = await mkdtemp(join(this.config.storage.scratchDir, 'query-'));
    const close = () => rm(scratch, { recursive: true, force: true });
    try {
      const pinned = await this.pin(principal, names);
      const datasets: DatasetSource[] = [];
      for (const p of pinned) datasets.push(await this.source(p, scratch));
      const readDirs = this.store.kind === 'local' ? pinned.filter((p) => p.backend === 's3').map((p) => this.store.readUrl(p.location.replace(/\/$/, ''))) : [];
      return { pinned, datasets, readDirs, scratch, close };
    } catch (err) {
      await close();
      throw err;
    }
  }

  /**
   * Each name the caller may read, resolved once to the version its DAG currently points at. A
   * name the caller may not read answers exactly like one that does not exist.
   */
  private async pin(principal: Principal, names: string[]): Promise<Pinned[]> {
    if (names.length === 0) return [];
    const params: unknown[] = [names];
    const rows = await query<Pinned>(
      this.db,
      `SELECT d.dataset_name, d.dataset_uuid, d.backend, p.dataset_version, v.location
         FROM datasets d
         JOIN dag_dataset_pointers p ON p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid
         JOIN dataset_versions v ON v.dataset_version = p.dataset_version
        WHERE d.dataset_name = ANY ($1) AND ${readablePredicate('d', principal, params)}`,
      params,
    );
    const found = new Set(rows.map((r) => r.dataset_name));
    const missing = names.filter((n) => !found.has(n));
    if (missing.length) throw QueryErrors.datasetNotFound(missing);
    return rows;
  }

  /** What one dataset's view is made of: the pinned version's files, or its Postgres table's rows. */
  private async source(p: Pinned, scratch: string): Promise<DatasetSource> {
    if (p.backend === 's3') {
      const keys = (await this.store.list(p.location)).filter((k) => k.endsWith('.parquet'));
      if (keys.length === 0) throw QueryErrors.datasetEmpty(p.dataset_name);
      const files: string[] = [];
      for (const key of keys) {
        if (this.store.kind === 'local') {
          files.push(this.store.readUrl(key));
          continue;
        }
        // No httpfs here: the pinned (immutable) files are copied into the query's scratch directory.
        const path = join(scratch, key);
        await mkdir(dirname(path), { recursive: true });
        await writeFile(path, (await this.store.get(key))!);
        files.push(path);
      }
      return { name: p.dataset_name, kind: 'parquet', files };
    }
    // A Postgres dataset: its pinned table's rows, read here and copied into the worker's DuckDB (the postgres extension is not assumed).
    const m = /^"(ds_[0-9a-f]{32})"\."(v_[0-9a-f]{32})"$/.exec(p.location);
    if (!m) throw new Error(`bad Postgres location ${p.location}`);
    const cols = await query<{ column_name: string; data_type: string }>(
      this.db,
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
      [m[1], m[2]],
    );
    if (cols.length === 0) throw QueryErrors.datasetEmpty(p.dataset_name);
    const rows = await query<Record<string, unknown>>(this.db, `SELECT ${cols.map((c) => (c.data_type === 'numeric' ? `"${c.column_name}"::text` : `"${c.column_name}"`)).join(', ')} FROM ${p.location}`);
    const columns = cols.map((c) => ({ name: c.column_name, type: duckType(c.data_type), values: rows.map((row) => row[c.column_name]) }));
    return { name: p.dataset_name, kind: 'rows', columns, rowCount: rows.length };
  }
}

