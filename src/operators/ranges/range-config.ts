export interface ConfigViolation {
  field: string;
  reason: string;
}

export interface RangeAggregatorConfig {
  range_size: number;
  origin: number;
  compact: boolean;
}

export interface RangeSplitterConfig {
  range_size: number;
  origin: number;
  range_column: string;
}

const int = (raw: Record<string, unknown>, field: string, dflt: number | undefined, min: number, max: number, fail: (f: string, r: string) => void) => {
  const v = raw[field];
  if (v === undefined) {
    if (dflt === undefined) fail(field, 'is required');
    return dflt ?? 0;
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    fail(field, `must be an integer from ${min} to ${max}`);
    return dflt ?? 0;
  }
  return v;
};

/** range_aggregator: windows of `range_size` blocks aligned to `origin`; `compact` merges a window's files into one. */
export function parseAggregatorConfig(raw: Record<string, unknown>): { config: RangeAggregatorConfig; violations: ConfigViolation[] } {
  const violations: ConfigViolation[] = [];
  const fail = (field: string, reason: string) => violations.push({ field, reason });
  for (const key of Object.keys(raw)) if (!['range_size', 'origin', 'compact', 'cursor'].includes(key)) fail(key, 'unknown field; range_aggregator takes range_size, origin, compact, cursor');
  const range_size = int(raw, 'range_size', undefined, 2, 100_000_000, fail);
  const origin = int(raw, 'origin', 0, 0, 2 ** 32 - 1, fail);
  if (raw.compact !== undefined && typeof raw.compact !== 'boolean') fail('compact', 'must be true or false');
  if (raw.cursor !== undefined && (typeof raw.cursor !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(raw.cursor))) fail('cursor', 'must be a column name');
  return { config: { range_size, origin, compact: raw.compact === true }, violations };
}

/** range_splitter: sub-ranges of `range_size` blocks aligned to `origin`; rows are selected by `range_column`. */
export function parseSplitterConfig(raw: Record<string, unknown>): { config: RangeSplitterConfig; violations: ConfigViolation[] } {
  const violations: ConfigViolation[] = [];
  const fail = (field: string, reason: string) => violations.push({ field, reason });
  for (const key of Object.keys(raw)) if (!['range_size', 'origin', 'range_column'].includes(key)) fail(key, 'unknown field; range_splitter takes range_size, origin, range_column');
  const range_size = int(raw, 'range_size', undefined, 1, 100_000_000, fail);
  const origin = int(raw, 'origin', 0, 0, 2 ** 32 - 1, fail);
  const range_column = raw.range_column ?? 'block_number';
  if (typeof range_column !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(range_column)) fail('range_column', 'must be a column name');
  return { config: { range_size, origin, range_column: range_column as string }, violations };
}
