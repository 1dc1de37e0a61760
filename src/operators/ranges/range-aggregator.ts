import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PARQUET_OPTIONS } from '../cryo/parquet-writer';
import { lit, openLockedDuckDb } from '../duckdb/locked-duckdb';
import { allPresent, assertOutputLocation, assertReadableKeys, resolveInputKeys } from '../input-files';
import { rangeKey, type BuiltinOperator, type OperatorContext } from '../operator';
import { parseAggregatorConfig } from './range-config';

interface Part {
  start: number;
  end: number;
  cursor: string | null;
  files: string[];
}

interface Window {
  parts: Part[];
  /** The fingerprint of the parts a manifest was emitted for, and the task that emits it. */
  emitted?: { fingerprint: string; by: string };
  /** The manifest that an invalidation withdrew, and the task that announces it. */
  withdrawn?: { fingerprint: string; by: string };
}

interface AggregatorState {
  windows: Record<string, Window>;
}

const MAX_CAS_RETRIES = 50;

/** What a window's content is: its parts, in order, with their cursors. A changed part changes it. */
function fingerprint(parts: Part[]): string {
  return createHash('sha256')
    .update(parts.map((p) => `${p.start}-${p.end}@${p.cursor ?? ''}`).join(','))
    .digest('hex');
}

/** Parts sorted by start; does their union cover [start, end] with no gap? */
function covers(parts: Part[], start: number, end: number): boolean {
  let next = start;
  for (const p of [...parts].sort((a, b) => a.start - b.start)) {
    if (p.start > next) return false;
    next = Math.max(next, p.end + 1);
  }
  return next > end;
}

/**
 * range_aggregator (docs/architecture/operators/range_aggregator.md): collects ordered range
 * events into windows of `range_size` blocks and, when a window is complete, emits one manifest
 * for it with explicit boundaries (optionally compacting its files into one). The window's parts
 * live in the operator state, changed only by compare-and-set, so exactly one task emits a
 * window's manifest however the input events are delivered, retried or raced.
 */
export const rangeAggregator: BuiltinOperator = async (ctx) => {
  const { config, violations } = parseAggregatorConfig(ctx.payload.job.config);
  if (violations.length) throw new Error(violations.map((v) => `config.${v.field}: ${v.reason}`).join('; '));
  const input = ctx.payload.input;
  if (!input) throw new Error('range_aggregator: runs on input events; this task has none');
  const event = input.event;
  if (event.start === null || event.end === null) throw new Error('range_aggregator: the input event must cover a block range (start/end)');
  const output = ctx.payload.outputs[0];
  if (!output?.location || output.backend !== 's3') throw new Error('range_aggregator: its one output needs backend s3 and a current dataset version');
  assertOutputLocation(output, ctx.payload.org_id, 'range_aggregator');
  const [start, end] = [Number(event.start), Number(event.end)];
  const w = Math.floor((start - config.origin) / config.range_size);
  const ws = config.origin + w * config.range_size;
  const we = ws + config.range_size - 1;
  if (end > we) throw new Error(`range_aggregator: input range ${start}..${end} crosses the window ${ws}..${we}; make range_size a multiple of the input's ranges`);
  const me = ctx.payload.task_id;
  // An invalidation that names its replacing revision and that revision's files (cryo_ingest's
  // re-ingested range: the files are already rewritten) is that revision's data: the part is
  // updated and the window re-announced, never withdrawn (ADR 0022).
  const namesFiles = typeof event.payload?.key === 'string' || Array.isArray(event.payload?.files);
  const revision = event.kind === 'data' || (event.cursor !== null && namesFiles);
  // The part's files are checked before they are recorded: the state only ever holds keys this
  // input dataset may name (src/operators/input-files.ts).
  const files = revision ? await resolveInputKeys(ctx, event, 'range_aggregator') : [];
  // A retraction that names files that are back (the range was confirmed again before this task
  // ran) is stale: the re-confirmation's data event records the part (ADR 0022).
  if (!revision && event.cursor === null && namesFiles) {
    const named = await resolveInputKeys(ctx, event, 'range_aggregator');
    if (named.length > 0 && (await allPresent(ctx.store, named))) {
      ctx.log('retraction of a range that is back: nothing to do', { start, end });
      return;
    }
  }

  // Record this part (or withdraw it, for an invalidation) and decide who announces what.
  let act: { emit?: string; withdraw?: string; parts: Part[] } = { parts: [] };
  for (let attempt = 0; ; attempt++) {
    ctx.signal.throwIfAborted();
    const { state, version } = await ctx.state.read<AggregatorState>();
    const s: AggregatorState = state ?? { windows: {} };
    const win: Window = s.windows[w] ?? { parts: [] };
    const others = win.parts.filter((p) => !(p.start === start && p.end === end));
    act = { parts: win.parts };
    if (!revision) {
      // An invalidation names the revision that replaces what it invalidates (its cursor), or none
      // (a retraction: the range is gone). It withdraws every other revision of the range, never
      // that one: the new data may have been recorded already, since the two events' tasks run in
      // either order (ADR 0022).
      const stale = win.parts.some((p) => p.start === start && p.end === end && (event.cursor === null || p.cursor !== event.cursor));
      if (stale) {
        win.parts = others;
        if (win.emitted) {
          win.withdrawn = { fingerprint: win.emitted.fingerprint, by: me };
          win.emitted = undefined;
        }
      }
      if (win.withdrawn?.by === me) act.withdraw = win.withdrawn.fingerprint;
    } else {
      win.parts = [...others, { start, end, cursor: event.cursor, files }].sort((a, b) => a.start - b.start);
      const fp = fingerprint(win.parts);
      if (covers(win.parts, ws, we) && win.emitted?.fingerprint !== fp) win.emitted = { fingerprint: fp, by: me };
      if (win.emitted?.by === me && win.emitted.fingerprint === fp) act.emit = fp;
      act.parts = win.parts;
    }
    s.windows[w] = win;
    try {
      await ctx.state.write(version, s);
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== 'state_conflict' || attempt >= MAX_CAS_RETRIES) throw err;
    }
  }

  const events = [];
  // A withdrawal is a retraction of the window: it names no revision (the window has none now).
  if (act.withdraw) events.push({ output: 0, kind: 'invalidation' as const, start: ws, end: we });
  if (act.emit) {
    // Every part's files again, as they are read or passed on: parts recorded by other tasks (or
    // by a build that did not check them) get no trust from having been stored.
    await assertReadableKeys(ctx, event, act.parts.flatMap((p) => p.files), 'range_aggregator');
    const files = config.compact ? [await compact(ctx, act.parts, rangeKey(output.location, ws, we))] : act.parts.flatMap((p) => p.files);
    events.push({ output: 0, kind: 'data' as const, start: ws, end: we, cursor: act.emit, payload: { files, parts: act.parts.map((p) => ({ start: p.start, end: p.end })) } });
  }
  if (events.length) await ctx.emit(events);
  ctx.log(act.emit ? 'window complete: manifest emitted' : 'part recorded', { window: `${ws}_${we}`, parts: act.parts.length });
};

/** Merges a window's files into one Parquet file, rows in part order: the "too many small files" fix. */
async function compact(ctx: OperatorContext, parts: Part[], key: string): Promise<string> {
  const duck = await openLockedDuckDb({ threads: 1, memoryLimit: '1GB', allowedDirectories: [ctx.scratchDir] });
  try {
    const paths: string[] = [];
    for (const [i, k] of parts.flatMap((p) => p.files).entries()) {
      const bytes = await ctx.store.get(k);
      if (!bytes) throw new Error(`range_aggregator: part file ${k} is missing from the object store`);
      const path = join(ctx.scratchDir, `part-${i}.parquet`);
      await writeFile(path, bytes);
      paths.push(path);
    }
    const out = join(ctx.scratchDir, 'compacted.parquet');
    await duck.conn.run(`COPY (SELECT * FROM read_parquet([${paths.map(lit).join(', ')}])) TO ${lit(out)} (${PARQUET_OPTIONS})`);
    await ctx.store.putFile(key, out);
    return key;
  } finally {
    duck.close();
  }
}
