import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runDuckDbJob } from '../duckdb/duckdb-process';
import { lit } from '../duckdb/locked-duckdb';
import { PARQUET_OPTIONS } from '../cryo/parquet-writer';
import { allPresent, assertOutputLocation, resolveInputKeys } from '../input-files';
import { rangeKey, type BuiltinOperator } from '../operator';


/** DuckDB's memory limit for a `sql` task; its process's address space is capped above it. */
export const SQL_MEMORY_LIMIT = '1GB';
/** Most rows one range of a `sql` job may write into a Postgres output (they pass through the wrapper). */
export const SQL_POSTGRES_MAX_ROWS = 1_000_000;

/**
 * The `sql` operator: a transform written in SQL, run by DuckDB over the files of the task's input
 * event (the view `input_0`), written as the same range of its one output. It runs in a locked
 * DuckDB (no file access outside the task's scratch directory, no network, no extensions), and the
 * statement must be one SELECT. An invalidation passes through as an invalidation of the same range.
 * The files it reads are those of the input event that the platform's records allow, never
 * whatever a payload names (src/operators/input-files.ts); it writes only its output's own location.
 */
export const sqlOperator: BuiltinOperator = async (ctx) => {
  const { payload } = ctx;
  const query = payload.job.config.sql;
  if (typeof query !== 'string' || !query.trim()) throw new Error('config.sql: must be a SELECT statement over input_0');
  const input = payload.input;
  if (!input) throw new Error('sql: runs on input events; this task has none');
  const event = input.event;
  const output = payload.outputs[0];
  if (!output || payload.outputs.length !== 1) throw new Error('sql: the job must have exactly one output');
  if (!output.location) throw new Error('sql: its output has no current dataset version');
  assertOutputLocation(output, payload.org_id, 'sql');
  if (output.backend === 'postgres' && !ctx.tables) throw new Error('sql: this wrapper cannot write Postgres datasets');
  if (output.backend === 'postgres' && output.update_strategy === 'replace' && !output.cursor) {
    throw new Error('sql: a Postgres output with update_strategy replace needs its cursor column (which rows a range rewrites)');
  }
  if (event.start === null || event.end === null) throw new Error('sql: the input event must cover a block range (start/end)');
  const scope = { start: event.start, end: event.end, ...(event.cursor ? { cursor: event.cursor } : {}) };
  const key = output.backend === 's3' ? rangeKey(output.location, event.start, event.end) : undefined;
  // The range's output is a function of its input as it is now (ADR 0022): the files the event
  // names, checked before anything is read (src/operators/input-files.ts). An invalidation counts
  // only when it names files itself (a re-ingested or retracted range); a window's withdrawal names none.
  const named = event.kind === 'data' || typeof event.payload?.key === 'string' || Array.isArray(event.payload?.files);
  const keys = named ? await resolveInputKeys(ctx, event, 'sql') : [];
  // Gone: the files it names are not there any more, or it is a retraction that names none (a
  // window withdrawn by range_aggregator: the window has no content now).
  const retracted = event.kind === 'invalidation' && event.cursor === null && !named;
  if (retracted || (keys.length > 0 && !(await allPresent(ctx.store, keys)))) {
    // The input range is gone (retracted by a reorg onto a shorter chain, after this event was
    // sent): so is its output, and downstream hears of it as a retraction (no cursor).
    if (key) await ctx.store.delete(key);
    else if (output.cursor) await ctx.tables!.retract(output.location, output.cursor, event.start, event.end);
    ctx.log('input range gone: output range removed', { start: event.start, end: event.end });
    await ctx.emit([{ output: 0, kind: 'invalidation', start: event.start, end: event.end, ...(key ? { payload: { key } } : {}) }]);
    return;
  }
  if (event.kind === 'invalidation') {
    // A retraction whose files are back (the range was confirmed again before this task ran) is
    // stale: the re-confirmation's own data event carries the range on, so nothing is passed on.
    if (event.cursor === null && keys.length > 0) {
      ctx.log('retraction of a range that is back: nothing to do', { start: event.start, end: event.end });
      return;
    }
    await ctx.emit([{ output: 0, kind: 'invalidation', ...scope, ...(key ? { payload: { key } } : {}) }]);
    return;
  }
  const paths: string[] = [];
  for (const [i, k] of keys.entries()) {
    const bytes = await ctx.store.get(k);
    if (!bytes) throw new Error(`sql: input file ${k} is missing from the object store`);
    const path = join(ctx.scratchDir, `input-${i}.parquet`);
    await writeFile(path, bytes);
    paths.push(path);
  }
  // A sub-range of shared files (range_splitter) names the column that selects its rows.
  const column = event.payload?.range_column;
  const where = typeof column === 'string' && /^[a-z_][a-z0-9_]{0,62}$/.test(column) ? ` WHERE "${column}" BETWEEN ${BigInt(event.start)} AND ${BigInt(event.end)}` : '';
  const setup = [`CREATE VIEW input_${input.input_index} AS SELECT * FROM read_parquet([${paths.map(lit).join(', ')}])${where}`];
  if (input.input_index !== 0) setup.push(`CREATE VIEW input_0 AS SELECT * FROM input_${input.input_index}`);
  // The DAG's SQL runs in a DuckDB process of its own, under an address-space limit (ADR 0020).
  const job = { threads: 1, memoryLimit: SQL_MEMORY_LIMIT, scratchDir: ctx.scratchDir, setup, select: query, userSql: true };
  if (key) {
    const out = join(ctx.scratchDir, 'output.parquet');
    await runDuckDbJob({ ...job, output: { kind: 'copy', path: out, options: PARQUET_OPTIONS } }, ctx.signal, 'sql');
    await ctx.store.putFile(key, out);
    await ctx.emit([{ output: 0, kind: 'data', ...scope, payload: { key } }]);
    return;
  }
  // A Postgres-backed output: the rows go into the version's table, replacing the range or
  // appending with unique_key dedupe, in one transaction.
  const result = (await runDuckDbJob({ ...job, output: { kind: 'rows', maxRows: SQL_POSTGRES_MAX_ROWS } }, ctx.signal, 'sql'))!;
  const written = await ctx.tables!.write(output.location, result.columns, result.rows, {
    strategy: output.update_strategy,
    uniqueKey: output.unique_key,
    rangeColumn: output.cursor ?? undefined,
    start: event.start,
    end: event.end,
  });
  ctx.log('rows written', { ...written, location: output.location });
  await ctx.emit([{ output: 0, kind: 'data', ...scope, payload: { rows: written.inserted } }]);
};
