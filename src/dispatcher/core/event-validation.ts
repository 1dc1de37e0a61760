import type { FieldViolation } from '../../common/errors';
import type { EmittedEvent } from './task-payload';

const MAX_EVENTS = 1000;
const MAX_PAYLOAD_BYTES = 64 * 1024;
const INT = /^-?\d{1,18}$/;

/** Validates events from a wrapper, field by field; returns the events or every violation. */
export function validateEmittedEvents(raw: unknown, path = 'events'): { events: EmittedEvent[]; violations: FieldViolation[] } {
  const violations: FieldViolation[] = [];
  const fail = (field: string, reason: string) => violations.push({ field, reason });
  if (raw === undefined) return { events: [], violations };
  if (!Array.isArray(raw)) {
    fail(path, 'must be a list');
    return { events: [], violations };
  }
  if (raw.length > MAX_EVENTS) fail(path, `at most ${MAX_EVENTS} events per call`);
  const events: EmittedEvent[] = [];
  raw.slice(0, MAX_EVENTS).forEach((e: unknown, i) => {
    const p = `${path}[${i}]`;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) return void fail(p, 'must be an object');
    const o = e as Record<string, unknown>;
    for (const key of Object.keys(o)) {
      if (!['output', 'kind', 'start', 'end', 'partition_key', 'cursor', 'payload'].includes(key)) fail(`${p}.${key}`, 'unknown field');
    }
    const output = o.output ?? 0;
    if (typeof output !== 'number' || !Number.isInteger(output) || output < 0) fail(`${p}.output`, 'must be a non-negative integer');
    const kind = o.kind ?? 'data';
    if (kind !== 'data' && kind !== 'invalidation') fail(`${p}.kind`, 'must be "data" or "invalidation"');
    const hasRange = o.start !== undefined || o.end !== undefined;
    if (hasRange) {
      for (const k of ['start', 'end'] as const) {
        const v = o[k];
        if (!((typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && INT.test(v)))) fail(`${p}.${k}`, 'must be an integer (start and end go together; end is inclusive)');
      }
      if (violations.length === 0 && BigInt(String(o.start)) > BigInt(String(o.end))) fail(`${p}.end`, 'must not be before start');
    }
    for (const k of ['partition_key', 'cursor'] as const) {
      if (o[k] !== undefined && (typeof o[k] !== 'string' || (o[k] as string).length === 0 || (o[k] as string).length > 512)) fail(`${p}.${k}`, 'must be a string of 1 to 512 characters');
      else if (typeof o[k] === 'string' && (o[k] as string).includes('\u0000')) fail(`${p}.${k}`, 'must not contain the NUL character (Postgres text cannot hold it)');
    }
    if (!hasRange && o.partition_key === undefined && o.cursor === undefined) {
      fail(p, 'needs a scope: start/end for a range, partition_key, or cursor (it is part of the idempotency key)');
    }
    if (o.payload !== undefined) {
      if (typeof o.payload !== 'object' || o.payload === null || Array.isArray(o.payload)) fail(`${p}.payload`, 'must be an object');
      else {
        const json = JSON.stringify(o.payload);
        if (Buffer.byteLength(json) > MAX_PAYLOAD_BYTES) fail(`${p}.payload`, `must be at most ${MAX_PAYLOAD_BYTES} bytes as JSON`);
        // JSON.stringify writes a NUL as \u0000 (and a lone backslash before u0000 as \\u0000, which is fine).
        else if (/(^|[^\\])(\\\\)*\\u0000/.test(json)) fail(`${p}.payload`, 'must not contain the NUL character \\u0000 in any string (Postgres JSON cannot hold it)');
      }
    }
    events.push(o as unknown as EmittedEvent);
  });
  return { events, violations };
}

/**
 * The scope part of the idempotency key: exactly one of range, partition, cursor (in that
 * precedence). A range event's cursor is its revision (cryo_ingest: the range's last block hash),
 * so a range re-ingested after a reorg is a new event while a retry of the same read is not (ADR 0010).
 */
export function eventScope(e: EmittedEvent): string {
  if (e.start !== undefined) return `range:${e.start}-${e.end}${e.cursor !== undefined ? `#${e.cursor}` : ''}`;
  if (e.partition_key !== undefined) return `partition:${e.partition_key}`;
  return `cursor:${e.cursor}`;
}
