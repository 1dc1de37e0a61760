import type { BuiltinOperator } from '../operator';
import { resolveInputKeys } from '../input-files';
import { parseSplitterConfig } from './range-config';

/**
 * range_splitter (docs/architecture/operators/range_splitter.md): the inverse of the aggregator.
 * One range (a manifest) in, its deterministic sub-ranges of `range_size` blocks out, each naming
 * the same files and the column that selects its rows. It writes no data.
 */
export const rangeSplitter: BuiltinOperator = async (ctx) => {
  const { config, violations } = parseSplitterConfig(ctx.payload.job.config);
  if (violations.length) throw new Error(violations.map((v) => `config.${v.field}: ${v.reason}`).join('; '));
  const event = ctx.payload.input?.event;
  if (!event || event.start === null || event.end === null) throw new Error('range_splitter: the input event must cover a block range (start/end)');
  const [start, end] = [Number(event.start), Number(event.end)];
  // It reads nothing, but the files it names go on to readers: they are checked as if read (src/operators/input-files.ts).
  const files = event.kind === 'data' ? await resolveInputKeys(ctx, event, 'range_splitter') : [];
  const events = [];
  for (let s = start; s <= end; ) {
    const k = Math.floor((s - config.origin) / config.range_size);
    const e = Math.min(end, config.origin + (k + 1) * config.range_size - 1);
    events.push({
      output: 0,
      kind: event.kind,
      start: s,
      end: e,
      ...(event.cursor ? { cursor: event.cursor } : {}),
      ...(event.kind === 'data' ? { payload: { files, range_column: config.range_column } } : {}),
    });
    s = e + 1;
  }
  for (let i = 0; i < events.length; i += 1000) await ctx.emit(events.slice(i, i + 1000));
};
