import { BeforeApplicationShutdown, HttpStatus, Inject, Injectable } from '@nestjs/common';
import { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DataSource } from 'typeorm';
import { sql as query, sqlOne } from '../common/db';
import { NodeRegistry } from '../common/lifecycle';
import { TraceError } from '../common/errors';
import type { Principal } from '../common/identity';
import { OBJECT_STORE, type ObjectStore } from '../common/storage';
import { TraceConfig } from '../config';
import { lit } from '../operators/duckdb';
import { readablePredicate } from '../registry/datasets/dataset-access';
import { gateSql } from './sql-gate';

interface Pinned {
  dataset_name: string;
  dataset_uuid: string;
  backend: 'postgres' | 's3';
  dataset_version: string;
  location: string;
}

interface OpenQuery {
  conn: DuckDBConnection;
  pinned: Pinned[];
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

/** The user's SELECT, ready to be wrapped: no trailing `;`, and a newline so a trailing `--` comment cannot swallow the wrapper. */
const statementOf = (sql: string) => `${sql.trim().replace(/;(\s*--[^\n]*)*\s*$/, '')}\n`;
const pinnedMap = (pinned: Pinned[]) => Object.fromEntries(pinned.map((p) => [p.dataset_name, p.dataset_version]));

export interface QueryAnswer {
  columns: { name: string; type: string }[];
  rows: unknown[][];
  row_count: number;
  truncated: boolean;
  pinned: Record<string, string>;
  elapsed_ms: number;
}

/** Postgres column type → DuckDB type for a pinned Postgres dataset copied into the query. */
function duckType(pg: string): string {
  if (/^(smallint|integer|bigint)$/.test(pg)) return 'BIGINT';
  if (pg === 'numeric') return 'HUGEINT';
  if (/^(real|double precision)$/.test(pg)) return 'DOUBLE';
  if (pg === 'boolean') return 'BOOLEAN';
  if (pg === 'bytea') return 'BLOB';
  return 'VARCHAR'; // text, dates and timestamps (as ISO text), json, …
}

/** A JSON-safe cell: big integers as strings when they would lose precision, bytes as 0x hex. */
function cell(v: unknown): unknown {
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return `0x${Buffer.from(v).toString('hex')}`;
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(cell);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, cell(x)]));
  return v;
}

/**
 * The Query Service's interactive mode (docs/architecture/query_service.md): the SQL is gated on
 * its parse tree, the datasets it names are resolved through the one read rule and each pinned to
 * its current version once, at the start; a fresh, locked DuckDB gets one view per dataset (the
 * pinned version's Parquet files, or its Postgres table's rows) and runs the query under the
 * configured limits.
 */
@Injectable()
export class QueryService implements BeforeApplicationShutdown {
  private readonly running = new Map<string, number>();
  private readonly batches = new Map<string, number>();
  private readonly background = new Set<Promise<void>>();

  constructor(
    private readonly db: DataSource,
    @Inject(OBJECT_STORE) private readonly store: ObjectStore,
    private readonly config: TraceConfig,
    private readonly node: NodeRegistry,
  ) {}

  async interactive(principal: Principal, sql: string, params: unknown[] = []): Promise<QueryAnswer> {
    const started = performance.now();
    const limits = this.config.query;
    const release = this.admit(this.running, principal.orgId, limits.maxConcurrentPerOrg, 'queries');
    let q: OpenQuery | undefined;
    try {
      q = await this.open(principal, sql, limits.memoryLimit);
      const reader = await this.execute(q, `SELECT * FROM (${statementOf(sql)}) AS q LIMIT ${limits.maxRows + 1}`, params, limits.timeoutMs, 'TRACE_QUERY_TIMEOUT_MS');
      const types = reader.columnTypes();
      const columns = reader.columnNames().map((name, i) => ({ name, type: types[i]!.toString() }));
      const all = reader.getRowsJS();
      const truncated = all.length > limits.maxRows;
      const rows = (truncated ? all.slice(0, limits.maxRows) : all).map((r) => r.map(cell));
      return { columns, rows, row_count: rows.length, truncated, pinned: pinnedMap(q.pinned), elapsed_ms: Math.round(performance.now() - started) };
    } finally {
      await q?.close();
      release();
    }
  }

  /**
   * Batch mode: the SQL is gated and its datasets pinned now (errors answer at once); the query
   * then runs in the background under the batch limits and its whole result goes to the object
   * store as Parquet. Answers the run's id.
   */
  async submit(principal: Principal, sql: string, params: unknown[] = []): Promise<{ query_id: string; status: 'running'; pinned: Record<string, string> }> {
    const limits = this.config.query.batch;
    const release = this.admit(this.batches, principal.orgId, limits.maxConcurrentPerOrg, 'batch queries');
    let q: OpenQuery;
    try {
      q = await this.open(principal, sql, limits.memoryLimit);
    } catch (err) {
      release();
      throw err;
    }
    const pinned = pinnedMap(q.pinned);
    const [run] = await query<{ id: string }>(
      this.db,
      `INSERT INTO query_runs (org_id, user_id, sql, pinned, status, node_id) VALUES ($1, $2, $3, $4, 'running', $5) RETURNING id`,
      [principal.orgId, principal.userId, sql, JSON.stringify(pinned), this.node.nodeId],
    );
    const id = run!.id;
    const key = `org/${principal.orgId}/query/${id}/result.parquet`;
    const work = (async () => {
      try {
        const out = join(q.scratch, 'result.parquet');
        const written = await this.execute(q, `COPY (${statementOf(sql)}) TO ${lit(out)} (FORMAT parquet, COMPRESSION zstd)`, params, limits.timeoutMs, 'TRACE_QUERY_BATCH_TIMEOUT_MS');
        const rowCount = Number(written.getRowsJS()[0]?.[0] ?? 0);
        await this.store.putFile(key, out);
        await this.db.query(`UPDATE query_runs SET status = 'succeeded', result_key = $2, row_count = $3, finished_at = now() WHERE id = $1`, [id, key, rowCount]);
      } catch (err) {
        await this.db.query(`UPDATE query_runs SET status = 'failed', error = $2, finished_at = now() WHERE id = $1`, [id, (err as Error).message.slice(0, 2000)]);
      } finally {
        await q.close();
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
    if (run.status !== 'succeeded' || !run.result_key) throw new TraceError(HttpStatus.CONFLICT, 'result_not_ready', `query ${id} is ${run.status}; its result exists once it has succeeded`);
    const bytes = await this.store.get(run.result_key);
    if (!bytes) throw new TraceError(HttpStatus.GONE, 'result_gone', `the result of query ${id} is no longer in the object store`);
    return bytes;
  }

  /** A draining process finishes the batch queries it accepted. */
  async beforeApplicationShutdown(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }

  private async runOf(principal: Principal, id: string): Promise<QueryRunRow> {
    const row = await sqlOne<QueryRunRow>(
      this.db,
      `SELECT r.id, r.status, r.pinned, r.row_count, r.result_key, r.error, r.created_at, r.finished_at,
              (r.status = 'running' AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = r.node_id)) AS orphaned
         FROM query_runs r WHERE r.id = $1 AND r.org_id = $2 AND r.user_id = $3`,
      [id, principal.orgId, principal.userId],
    );
    if (!row) throw new TraceError(HttpStatus.NOT_FOUND, 'query_not_found', `no query ${id}`);
    if (row.orphaned) {
      // The process running it is gone: it will never finish.
      await this.db.query(`UPDATE query_runs SET status = 'failed', error = 'the process running it stopped', finished_at = now() WHERE id = $1 AND status = 'running'`, [id]);
      return { ...row, status: 'failed', error: 'the process running it stopped' };
    }
    return row;
  }

  private admit(counter: Map<string, number>, orgId: string, max: number, what: string): () => void {
    const inFlight = counter.get(orgId) ?? 0;
    if (inFlight >= max) throw new TraceError(HttpStatus.TOO_MANY_REQUESTS, 'too_many_queries', `your org already runs ${inFlight} ${what} (the limit is ${max}); try again when one has finished`);
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

  /** Gate, pin, and a locked DuckDB with one view per pinned dataset. */
  private async open(principal: Principal, sql: string, memoryLimit: string): Promise<OpenQuery> {
    await mkdir(this.config.storage.scratchDir, { recursive: true });
    const scratch = await mkdtemp(join(this.config.storage.scratchDir, 'query-'));
    let instance: DuckDBInstance | undefined;
    let conn: DuckDBConnection | undefined;
    const close = async () => {
      conn?.closeSync();
      instance?.closeSync();
      await rm(scratch, { recursive: true, force: true });
    };
    try {
      instance = await DuckDBInstance.create(':memory:', {
        threads: String(this.config.query.threads),
        memory_limit: memoryLimit,
        autoload_known_extensions: 'false',
        autoinstall_known_extensions: 'false',
        allow_community_extensions: 'false',
      });
      conn = await instance.connect();
      const names = await gateSql(conn, sql);
      const pinned = await this.pin(principal, names);
      const dirs = [scratch, ...(this.store.kind === 'local' ? pinned.filter((p) => p.backend === 's3').map((p) => this.store.readUrl(p.location.replace(/\/$/, ''))) : [])];
      await conn.run(`SET allowed_directories = [${dirs.map((d) => lit(`${d}/`)).join(', ')}]`);
      await conn.run('SET enable_external_access = false');
      for (const p of pinned) await this.attach(conn, p, scratch);
      await conn.run('SET lock_configuration = true');
      return { conn, pinned, scratch, close };
    } catch (err) {
      await close();
      throw err;
    }
  }

  /** Runs one statement of the query, interrupted at the timeout; DuckDB errors become 4xx answers. */
  private async execute(q: OpenQuery, statement: string, params: unknown[], timeoutMs: number, setting: string) {
    const timer = setTimeout(() => q.conn.interrupt(), timeoutMs);
    try {
      return await q.conn.runAndReadAll(statement, params as never);
    } catch (err) {
      const message = (err as Error).message;
      if (/INTERRUPT/i.test(message)) throw new TraceError(HttpStatus.REQUEST_TIMEOUT, 'query_timeout', `the query was interrupted after ${timeoutMs} ms (${setting})`);
      throw new TraceError(HttpStatus.BAD_REQUEST, 'query_failed', message.split('\n')[0]!.slice(0, 2000));
    } finally {
      clearTimeout(timer);
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
    if (missing.length) {
      throw new TraceError(HttpStatus.NOT_FOUND, 'dataset_not_found', `no dataset named ${missing.map((m) => `"${m}"`).join(', ')} (or you may not read it)`);
    }
    return rows;
  }

  /** One view per dataset, named after it, over the pinned version only. */
  private async attach(conn: DuckDBConnection, p: Pinned, scratch: string): Promise<void> {
    const view = `"${p.dataset_name}"`;
    if (p.backend === 's3') {
      const keys = (await this.store.list(p.location)).filter((k) => k.endsWith('.parquet'));
      if (keys.length === 0) throw new TraceError(HttpStatus.CONFLICT, 'dataset_empty', `dataset "${p.dataset_name}" has no data in its current version yet`);
      const paths: string[] = [];
      for (const key of keys) {
        if (this.store.kind === 'local') {
          paths.push(this.store.readUrl(key));
          continue;
        }
        // No httpfs here: the pinned (immutable) files are copied into the query's scratch directory.
        const path = join(scratch, key);
        await mkdir(dirname(path), { recursive: true });
        await writeFile(path, (await this.store.get(key))!);
        paths.push(path);
      }
      await conn.run(`CREATE VIEW ${view} AS SELECT * FROM read_parquet([${paths.map(lit).join(', ')}])`);
      return;
    }
    // A Postgres dataset: its pinned table's rows, copied into DuckDB (the postgres extension is not assumed).
    const m = /^"(ds_[0-9a-f]{32})"\."(v_[0-9a-f]{32})"$/.exec(p.location);
    if (!m) throw new Error(`bad Postgres location ${p.location}`);
    const cols = await query<{ column_name: string; data_type: string }>(
      this.db,
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
      [m[1], m[2]],
    );
    if (cols.length === 0) throw new TraceError(HttpStatus.CONFLICT, 'dataset_empty', `dataset "${p.dataset_name}" has no data in its current version yet`);
    await conn.run(`CREATE TABLE ${view} (${cols.map((c) => `"${c.column_name}" ${duckType(c.data_type)}`).join(', ')})`);
    const rows = await query<Record<string, unknown>>(this.db, `SELECT ${cols.map((c) => (c.data_type === 'numeric' ? `"${c.column_name}"::text` : `"${c.column_name}"`)).join(', ')} FROM ${p.location}`);
    if (rows.length === 0) return;
    const appender = await conn.createAppender(p.dataset_name);
    for (const row of rows) {
      for (const c of cols) {
        const v = row[c.column_name];
        const t = duckType(c.data_type);
        if (v === null || v === undefined) appender.appendNull();
        else if (t === 'BIGINT') appender.appendBigInt(BigInt(v as string | number));
        else if (t === 'HUGEINT') appender.appendHugeInt(BigInt(String(v).split('.')[0]!));
        else if (t === 'DOUBLE') appender.appendDouble(Number(v));
        else if (t === 'BOOLEAN') appender.appendBoolean(Boolean(v));
        else if (t === 'BLOB') appender.appendBlob(v as Buffer);
        else appender.appendVarchar(v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v));
      }
      appender.endRow();
    }
    appender.closeSync();
  }
}
