import { DATATYPES, type Datatype } from './schemas';

export interface CryoIngestConfig {
  network: string;
  datatypes: Datatype[];
  chunk_size: number;
  start_block: number;
  end_block?: number;
  confirmations: number;
  follow_head: boolean;
  poll_interval_ms: number;
  requests_per_second: number;
  batch_size: number;
  max_retries: number;
  rpc_url?: string;
}

export interface ConfigViolation {
  field: string;
  reason: string;
}

const FIELDS = ['network', 'datatypes', 'chunk_size', 'start_block', 'end_block', 'confirmations', 'follow_head', 'poll_interval_ms', 'requests_per_second', 'batch_size', 'max_retries', 'rpc_url'];

/**
 * cryo_ingest's config, validated field by field (at deploy, where each violation gets the YAML
 * path, and again when a task runs). `outputs` is the job's number of outputs: one per datatype.
 */
export function parseCryoConfig(raw: Record<string, unknown>, outputs?: number): { config: CryoIngestConfig; violations: ConfigViolation[] } {
  const violations: ConfigViolation[] = [];
  const fail = (field: string, reason: string) => violations.push({ field, reason });
  for (const key of Object.keys(raw)) if (!FIELDS.includes(key)) fail(key, `unknown field; cryo_ingest takes ${FIELDS.join(', ')}`);
  const int = (field: string, dflt: number | undefined, min: number, max: number): number | undefined => {
    const v = raw[field];
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      fail(field, `must be an integer from ${min} to ${max}`);
      return dflt;
    }
    return v;
  };
  const network = raw.network ?? 'ethereum';
  if (typeof network !== 'string' || !/^[a-z0-9_]{1,64}$/.test(network)) fail('network', 'must be a name of lowercase letters, digits and _ (e.g. ethereum)');
  let datatypes: Datatype[] = ['blocks', 'transactions', 'logs'];
  if (raw.datatypes !== undefined) {
    if (!Array.isArray(raw.datatypes) || raw.datatypes.length === 0) fail('datatypes', `must be a non-empty list of ${DATATYPES.join(', ')}`);
    else {
      raw.datatypes.forEach((d, i) => {
        if (!DATATYPES.includes(d as Datatype)) fail(`datatypes[${i}]`, `must be one of ${DATATYPES.join(', ')}`);
      });
      if (new Set(raw.datatypes).size !== raw.datatypes.length) fail('datatypes', 'lists a datatype twice');
      datatypes = raw.datatypes as Datatype[];
    }
  }
  if (outputs !== undefined && outputs !== datatypes.length) fail('datatypes', `has ${datatypes.length} datatype(s) but the job has ${outputs} output(s): one output per datatype, in order`);
  const chunk_size = int('chunk_size', 1000, 1, 1_000_000)!;
  const start_block = int('start_block', 0, 0, 2 ** 32 - 1)!;
  const end_block = int('end_block', undefined, 0, 2 ** 32 - 1);
  if (end_block !== undefined && end_block < start_block) fail('end_block', 'must not be before start_block');
  const confirmations = int('confirmations', 12, 0, 10_000)!;
  const follow_head = raw.follow_head ?? false;
  if (typeof follow_head !== 'boolean') fail('follow_head', 'must be true or false');
  const poll_interval_ms = int('poll_interval_ms', 2000, 10, 600_000)!;
  const rps = raw.requests_per_second ?? 0;
  if (typeof rps !== 'number' || !(rps >= 0) || rps > 100_000) fail('requests_per_second', 'must be a number from 0 (no limit) to 100000');
  const batch_size = int('batch_size', 100, 1, 1000)!;
  const max_retries = int('max_retries', 5, 0, 50)!;
  const rpc_url = raw.rpc_url;
  if (rpc_url !== undefined && (typeof rpc_url !== 'string' || !/^https?:\/\/\S+$/.test(rpc_url))) fail('rpc_url', 'must be an http(s) URL (keys belong in a pool slot secret, not here)');
  return {
    config: {
      network: network as string,
      datatypes,
      chunk_size,
      start_block,
      end_block,
      confirmations,
      follow_head: follow_head as boolean,
      poll_interval_ms,
      requests_per_second: rps as number,
      batch_size,
      max_retries,
      rpc_url: rpc_url as string | undefined,
    },
    violations,
  };
}
