import { HttpStatus, Inject, Injectable } from '@nestjs/common';
import { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DataSource } from 'typeorm';
import { sql as query } from '../common/db';
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
export class QueryService {
  private readonly running = new Map<string, number>();

  constructor(
    private readonly db: DataSource,
    @Inject(OBJECT_STORE) private readonly store: ObjectStore,
    private readonly config: TraceConfig,
  ) {}

  async interactive(principal: Principal, sql: string, params: unknown[] = []): Promise<QueryAnswer> {
    const started = performance.now();
    const limits = this.config.query;
    const inFlight = this.running.get(principal.orgId) ?? 0;
    if (inFlight >= limits.maxConcurrentPerOrg) {
      throw new TraceError(HttpStatus.TOO_MANY_REQUESTS, 'too_many_queries', `your org already runs ${inFlight} queries (the limit is ${limits.maxConcurrentPerOrg}); try again when one has finished`);
    }
    this.running.set(principal.orgId, inFlight + 1);
    await mkdir(this.config.storage.scratchDir, { recursive: true });
    const scratch = await mkdtemp(join(this.config.storage.scratchDir, 'query-'));
    let instance: DuckDBInstance | undefined;
    let conn: DuckDBConnection | undefined;
    try {
      instance = await DuckDBInstance.create(':memory:', {
        threads: String(limits.threads),
        memory_limit: limits.memoryLimit,
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

      const statement = sql.trim().replace(/;\s*$/, '');
      const timer = setTimeout(() => conn?.interrupt(), limits.timeoutMs);
      let reader;
      try {
        reader = await conn.runAndReadAll(`SELECT * FROM (${statement}) AS q LIMIT ${limits.maxRows + 1}`, params as never);
      } catch (err) {
        const message = (err as Error).message;
        if (/INTERRUPT/i.test(message)) throw new TraceError(HttpStatus.REQUEST_TIMEOUT, 'query_timeout', `the query was interrupted after ${limits.timeoutMs} ms (TRACE_QUERY_TIMEOUT_MS)`);
        throw new TraceError(HttpStatus.BAD_REQUEST, 'query_failed', message.split('\n')[0]!.slice(0, 2000));
      } finally {
        clearTimeout(timer);
      }
      const types = reader.columnTypes();
      const columns = reader.columnNames().map((name, i) => ({ name, type: types[i]!.toString() }));
      const all = reader.getRowsJS();
      const truncated = all.length > limits.maxRows;
      const rows = (truncated ? all.slice(0, limits.maxRows) : all).map((r) => r.map(cell));
      return {
        columns,
        rows,
        row_count: rows.length,
        truncated,
        pinned: Object.fromEntries(pinned.map((p) => [p.dataset_name, p.dataset_version])),
        elapsed_ms: Math.round(performance.now() - started),
      };
    } finally {
      conn?.closeSync();
      instance?.closeSync();
      await rm(scratch, { recursive: true, force: true });
      const n = (this.running.get(principal.orgId) ?? 1) - 1;
      if (n > 0) this.running.set(principal.orgId, n);
      else this.running.delete(principal.orgId);
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
