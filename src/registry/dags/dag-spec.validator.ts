import { parseCryoConfig } from '../../operators/cryo/cryo-config';
import { parseAggregatorConfig, parseSplitterConfig } from '../../operators/ranges/range-config';
import {
  BACKENDS,
  COLUMN_PATTERN,
  DagSpec,
  DATASET_NAME_PATTERN,
  DEFAULTS,
  ENV_NAME_PATTERN,
  JobInput,
  JobOutput,
  JobSpec,
  LANGUAGES,
  LIMITS,
  NAME_PATTERN,
  Operator,
  OPERATORS,
  PARTITIONINGS,
  PublishEntry,
  RUNTIMES,
  SECRET_NAME_PATTERN,
  SpecViolation,
  SpecWarning,
  UPDATE_STRATEGIES,
  WorkerPool,
  WorkerSlot,
} from './dag-spec';

export interface SpecCheck {
  spec?: DagSpec;
  violations: SpecViolation[];
  warnings: SpecWarning[];
}

type Obj = Record<string, unknown>;

/** Collects every violation with its path; the walkers below never stop at the first one. */
class Checker {
  readonly violations: SpecViolation[] = [];
  readonly warnings: SpecWarning[] = [];

  fail(path: string, reason: string): undefined {
    this.violations.push({ path, reason });
    return undefined;
  }

  object(path: string, v: unknown, known: readonly string[], required: readonly string[] = [], accepted: readonly string[] = []): Obj | undefined {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return this.fail(path, `must be a mapping, got ${kind(v)}`);
    const o = v as Obj;
    for (const key of Object.keys(o)) {
      if (!known.includes(key) && !accepted.includes(key)) this.fail(join(path, key), `unknown field; expected one of: ${known.join(', ')}`);
    }
    for (const key of required) if (o[key] === undefined) this.fail(join(path, key), 'is required');
    return o;
  }

  array(path: string, v: unknown, max: number, required = false): unknown[] {
    if (v === undefined) {
      if (required) this.fail(path, 'is required');
      return [];
    }
    if (!Array.isArray(v)) return this.fail(path, `must be a list, got ${kind(v)}`) ?? [];
    if (v.length > max) this.fail(path, `has ${v.length} entries; the limit is ${max}`);
    return v.slice(0, max);
  }

  string(path: string, v: unknown, pattern?: RegExp, describe?: string): string | undefined {
    if (v === undefined) return undefined;
    if (typeof v !== 'string') return this.fail(path, `must be a string, got ${kind(v)}`);
    if (pattern && !pattern.test(v)) return this.fail(path, `${JSON.stringify(truncate(v))} ${describe ?? `must match ${pattern}`}`);
    return v;
  }

  oneOf<T extends string>(path: string, v: unknown, allowed: readonly T[]): T | undefined {
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !allowed.includes(v as T)) {
      return this.fail(path, `unknown value ${JSON.stringify(typeof v === 'string' ? truncate(v) : v)}; expected one of: ${allowed.join(', ')}`);
    }
    return v as T;
  }

  int(path: string, v: unknown, min: number, max: number): number | undefined {
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) return this.fail(path, `must be an integer, got ${kind(v)}`);
    if (v < min || v > max) return this.fail(path, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  bool(path: string, v: unknown): boolean | undefined {
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') return this.fail(path, `must be true or false, got ${kind(v)}`);
    return v;
  }

  stringMap(path: string, v: unknown, keyPattern: RegExp, valuePattern: RegExp | undefined, max: number, describe: string): Record<string, string> {
    if (v === undefined) return {};
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return this.fail(path, `must be a mapping, got ${kind(v)}`) ?? {};
    const out: Record<string, string> = {};
    const entries = Object.entries(v as Obj);
    if (entries.length > max) this.fail(path, `has ${entries.length} entries; the limit is ${max}`);
    for (const [key, value] of entries) {
      if (!keyPattern.test(key)) {
        this.fail(join(path, key), `${JSON.stringify(truncate(key))} is not a valid environment variable name (upper-case letters, digits, "_")`);
        continue;
      }
      const s = this.string(join(path, key), value, valuePattern, describe);
      if (s !== undefined) out[key] = s;
    }
    return out;
  }
}

const TOP_FIELDS = ['name', 'description', 'worker_pools', 'jobs', 'publish'];
const JOB_FIELDS = ['name', 'operator', 'language', 'entry_point', 'runtime', 'inputs', 'outputs', 'config', 'scaling', 'worker_pool', 'timeout', 'max_attempts'];
const OUTPUT_FIELDS = ['backend', 'update_strategy', 'unique_key', 'cursor', 'partitioning', 'partition_key', 'buffered', 'writes_to'];

/**
 * Checks a parsed spec's shape and its graph: types, names, references, cycles, publish names.
 * Everything that needs the database (other DAGs' datasets, secrets, read permission) is checked
 * by the deploy service on top of this.
 */
export function validateDagSpec(raw: unknown): SpecCheck {
  const c = new Checker();
  const top = c.object('', raw, TOP_FIELDS, ['name', 'jobs']);
  if (!top) return { violations: c.violations, warnings: c.warnings };

  const name = c.string('name', top.name, NAME_PATTERN, 'must be lower snake_case: a letter, then letters, digits or "_" (at most 64)');
  const description = c.string('description', top.description);
  if (description !== undefined && description.length > 4000) c.fail('description', 'is longer than 4000 characters');

  const workerPools = c.array('worker_pools', top.worker_pools, LIMITS.workerPools).map((p, i) => pool(c, `worker_pools[${i}]`, p));
  const jobs = c.array('jobs', top.jobs, LIMITS.jobs, true).map((j, i) => job(c, `jobs[${i}]`, j));
  if (Array.isArray(top.jobs) && top.jobs.length === 0) c.fail('jobs', 'must have at least one job');
  const publish = c.array('publish', top.publish, LIMITS.publish).map((p, i) => publishEntry(c, `publish[${i}]`, p));

  duplicates(c, workerPools.map((p) => p?.name), 'worker_pools', 'worker pool');
  duplicates(c, jobs.map((j) => j?.name), 'jobs', 'job');
  graph(c, jobs, workerPools, publish);

  if (c.violations.length > 0 || !name) return { violations: c.violations, warnings: c.warnings };
  return {
    spec: { name, description, worker_pools: workerPools as WorkerPool[], jobs: jobs as JobSpec[], publish: publish as PublishEntry[] },
    violations: [],
    warnings: c.warnings,
  };
}

function pool(c: Checker, path: string, v: unknown): WorkerPool | undefined {
  const o = c.object(path, v, ['name', 'slots'], ['name', 'slots']);
  if (!o) return undefined;
  const name = c.string(join(path, 'name'), o.name, NAME_PATTERN, 'must be lower snake_case (at most 64)');
  const slots = c.array(join(path, 'slots'), o.slots, LIMITS.slotsPerPool, false).map((s, i) => slot(c, `${path}.slots[${i}]`, s));
  if (Array.isArray(o.slots) && o.slots.length === 0) c.fail(join(path, 'slots'), 'must have at least one slot');
  return name === undefined ? undefined : { name, slots: slots.filter((s): s is WorkerSlot => !!s) };
}

function slot(c: Checker, path: string, v: unknown): WorkerSlot | undefined {
  const o = c.object(path, v, ['env', 'secret_env']);
  if (!o) return undefined;
  const env = c.stringMap(join(path, 'env'), o.env, ENV_NAME_PATTERN, undefined, LIMITS.envPerSlot, '');
  const secretEnv = c.stringMap(join(path, 'secret_env'), o.secret_env, ENV_NAME_PATTERN, SECRET_NAME_PATTERN, LIMITS.envPerSlot, 'is not a secret name (lower snake_case)');
  for (const key of Object.keys(secretEnv)) {
    if (key in env) c.fail(`${path}.secret_env.${key}`, 'is also set in env; a variable comes from one or the other');
  }
  return { env, secret_env: secretEnv };
}

function job(c: Checker, path: string, v: unknown): JobSpec | undefined {
  // execution_strategy is recognised only to explain why it is refused.
  const o = c.object(path, v, JOB_FIELDS, ['name', 'operator'], ['execution_strategy']);
  if (!o) return undefined;
  if (o.execution_strategy !== undefined) {
    c.fail(join(path, 'execution_strategy'), `${JSON.stringify(o.execution_strategy)} is not supported: the dispatcher never batches; model bulk work explicitly with range_aggregator / range_splitter jobs`);
  }
  const name = c.string(join(path, 'name'), o.name, NAME_PATTERN, 'must be lower snake_case (at most 64)');
  const operator = c.oneOf(join(path, 'operator'), o.operator, OPERATORS);
  const runtime = c.oneOf(join(path, 'runtime'), o.runtime, RUNTIMES) ?? DEFAULTS.runtime;
  const language = c.oneOf(join(path, 'language'), o.language, LANGUAGES);
  const entryPoint = c.string(join(path, 'entry_point'), o.entry_point, /^[\w./@#:-]{1,512}$/, 'must be a module path and optional export, e.g. "dist/handler.js#handle"');
  if (operator === 'user') {
    if (o.language === undefined) c.fail(join(path, 'language'), `is required for user code; one of: ${LANGUAGES.join(', ')}`);
    if (o.entry_point === undefined) c.fail(join(path, 'entry_point'), 'is required for user code');
  } else if (operator) {
    if (o.language !== undefined) c.fail(join(path, 'language'), `only applies to operator "user"; ${operator} is built in`);
    if (o.entry_point !== undefined) c.fail(join(path, 'entry_point'), `only applies to operator "user"; ${operator} is built in`);
  }

  const inputs = c.array(join(path, 'inputs'), o.inputs, LIMITS.inputsPerJob).map((i, n) => input(c, `${path}.inputs[${n}]`, i));
  const outputs = c.array(join(path, 'outputs'), o.outputs, LIMITS.outputsPerJob).map((x, n) => output(c, `${path}.outputs[${n}]`, x));

  let config: Record<string, unknown> = {};
  if (o.config !== undefined) {
    if (typeof o.config !== 'object' || o.config === null || Array.isArray(o.config)) c.fail(join(path, 'config'), `must be a mapping, got ${kind(o.config)}`);
    else config = o.config as Record<string, unknown>;
  }

  let maxConcurrency = DEFAULTS.max_concurrency;
  const scaling = o.scaling === undefined ? undefined : c.object(join(path, 'scaling'), o.scaling, ['max_concurrency', 'mode']);
  if (scaling) {
    maxConcurrency = c.int(`${path}.scaling.max_concurrency`, scaling.max_concurrency, 1, LIMITS.maxConcurrency) ?? maxConcurrency;
    if (scaling.mode !== undefined) c.warnings.push({ path: `${path}.scaling.mode`, message: 'scaling.mode is ignored; concurrency is min(scaling.max_concurrency, worker pool size)' });
  }
  const workerPool = c.string(join(path, 'worker_pool'), o.worker_pool, NAME_PATTERN, 'must be lower snake_case');
  const timeout = duration(c, join(path, 'timeout'), o.timeout) ?? DEFAULTS.timeout_seconds;
  const maxAttempts = c.int(join(path, 'max_attempts'), o.max_attempts, 1, LIMITS.maxAttempts) ?? DEFAULTS.max_attempts;

  // A job with a bad operator is still returned (the spec is refused anyway) so that its
  // references and cycles are checked too: every problem is reported in one pass.
  if (!name) return undefined;
  return {
    name,
    operator: operator as Operator,
    ...(language ? { language } : {}),
    ...(entryPoint ? { entry_point: entryPoint } : {}),
    runtime,
    inputs: inputs.filter((i): i is JobInput => !!i),
    outputs: outputs as JobOutput[],
    config,
    scaling: { max_concurrency: maxConcurrency },
    ...(workerPool ? { worker_pool: workerPool } : {}),
    timeout_seconds: timeout,
    max_attempts: maxAttempts,
  };
}

function input(c: Checker, path: string, v: unknown): JobInput | undefined {
  const o = c.object(path, v, ['from'], ['from']);
  if (!o || o.from === undefined) return undefined;
  const from = c.object(join(path, 'from'), o.from, ['job', 'output', 'dataset']);
  if (!from) return undefined;
  if (from.dataset !== undefined) {
    if (from.job !== undefined || from.output !== undefined) return c.fail(join(path, 'from'), 'takes either {job, output} or {dataset}, not both');
    const dataset = c.string(`${path}.from.dataset`, from.dataset, DATASET_NAME_PATTERN, 'is not a dataset name (lower snake_case, at most 128)');
    return dataset ? { from: { dataset } } : undefined;
  }
  if (from.job === undefined) return c.fail(join(path, 'from'), 'needs {job, output} for an edge inside the DAG or {dataset} for a published dataset');
  const jobName = c.string(`${path}.from.job`, from.job, NAME_PATTERN, 'is not a job name');
  const out = from.output === undefined ? 0 : c.int(`${path}.from.output`, from.output, 0, LIMITS.outputsPerJob - 1);
  return jobName !== undefined && out !== undefined ? { from: { job: jobName, output: out } } : undefined;
}

function output(c: Checker, path: string, v: unknown): JobOutput | undefined {
  const o = c.object(path, v, OUTPUT_FIELDS);
  if (!o) return undefined;
  if (o.writes_to !== undefined) {
    const others = Object.keys(o).filter((k) => k !== 'writes_to');
    if (others.length) c.fail(path, `an output with writes_to shares another output's dataset and takes no other fields (found: ${others.join(', ')})`);
    const w = c.object(join(path, 'writes_to'), o.writes_to, ['job', 'output'], ['job']);
    if (!w) return undefined;
    const jobName = c.string(`${path}.writes_to.job`, w.job, NAME_PATTERN, 'is not a job name');
    const out = w.output === undefined ? 0 : c.int(`${path}.writes_to.output`, w.output, 0, LIMITS.outputsPerJob - 1);
    return jobName !== undefined && out !== undefined ? { writes_to: { job: jobName, output: out } } : undefined;
  }
  for (const key of ['backend', 'update_strategy']) if (o[key] === undefined) c.fail(join(path, key), 'is required');
  const backend = c.oneOf(join(path, 'backend'), o.backend, BACKENDS);
  const strategy = c.oneOf(join(path, 'update_strategy'), o.update_strategy, UPDATE_STRATEGIES);
  const uniqueKey = o.unique_key === undefined ? undefined : c.array(join(path, 'unique_key'), o.unique_key, 16).map((k, i) => c.string(`${path}.unique_key[${i}]`, k, COLUMN_PATTERN, 'is not a column name'));
  if (strategy === 'append' && (!uniqueKey || uniqueKey.length === 0)) c.fail(join(path, 'unique_key'), 'is required when update_strategy is append (rows are deduplicated by it)');
  const cursor = c.string(join(path, 'cursor'), o.cursor, COLUMN_PATTERN, 'is not a column name');
  const partitioning = c.oneOf(join(path, 'partitioning'), o.partitioning, PARTITIONINGS) ?? 'none';
  const partitionKey = c.string(join(path, 'partition_key'), o.partition_key, COLUMN_PATTERN, 'is not a column name');
  if (partitioning === 'range' && !cursor) c.fail(join(path, 'cursor'), 'is required when partitioning is range (ranges are over the cursor)');
  if (partitioning === 'key' && !partitionKey) c.fail(join(path, 'partition_key'), 'is required when partitioning is key');
  if (partitioning !== 'key' && partitionKey) c.fail(join(path, 'partition_key'), 'only applies when partitioning is key');
  const buffered = c.bool(join(path, 'buffered'), o.buffered) ?? false;
  if (buffered && backend === 's3') c.fail(join(path, 'buffered'), 'buffered datasets are Postgres datasets written through the sink; use backend: postgres');
  if (!backend || !strategy) return undefined;
  return {
    backend,
    update_strategy: strategy,
    ...(uniqueKey && uniqueKey.every((k) => k) ? { unique_key: uniqueKey as string[] } : {}),
    ...(cursor ? { cursor } : {}),
    partitioning,
    ...(partitionKey ? { partition_key: partitionKey } : {}),
    buffered,
  };
}

function publishEntry(c: Checker, path: string, v: unknown): PublishEntry | undefined {
  const o = c.object(path, v, ['job', 'output_index', 'dataset_name'], ['job', 'dataset_name']);
  if (!o) return undefined;
  const jobName = c.string(join(path, 'job'), o.job, NAME_PATTERN, 'is not a job name');
  const index = o.output_index === undefined ? 0 : c.int(join(path, 'output_index'), o.output_index, 0, LIMITS.outputsPerJob - 1);
  const datasetName = c.string(join(path, 'dataset_name'), o.dataset_name, DATASET_NAME_PATTERN, 'must match ^[a-z][a-z0-9_]{0,127}$ (lower snake_case, at most 128)');
  return jobName !== undefined && index !== undefined && datasetName !== undefined ? { job: jobName, output_index: index, dataset_name: datasetName } : undefined;
}

/** References, cycles and publish targets, over the jobs that parsed. */
function graph(c: Checker, jobs: (JobSpec | undefined)[], pools: (WorkerPool | undefined)[], publish: (PublishEntry | undefined)[]): void {
  const byName = new Map<string, { job: JobSpec; index: number }>();
  jobs.forEach((j, index) => j && !byName.has(j.name) && byName.set(j.name, { job: j, index }));
  const poolNames = new Set(pools.filter((p): p is WorkerPool => !!p).map((p) => p.name));

  const outputRef = (path: string, jobName: string, output: number): JobOutput | undefined => {
    const target = byName.get(jobName);
    if (!target) return c.fail(`${path}.job`, `no job named "${jobName}" in this DAG`);
    if (output >= target.job.outputs.length) {
      return c.fail(`${path}.output`, `job "${jobName}" has ${target.job.outputs.length} output(s); index ${output} does not exist`);
    }
    return target.job.outputs[output];
  };

  jobs.forEach((j, i) => {
    if (!j) return;
    const path = `jobs[${i}]`;
    j.inputs.forEach((input, n) => {
      if ('job' in input.from) {
        if (input.from.job === j.name) c.fail(`${path}.inputs[${n}].from.job`, 'a job cannot read its own output');
        else outputRef(`${path}.inputs[${n}].from`, input.from.job, input.from.output);
      }
    });
    j.outputs.forEach((out, n) => {
      if (!out?.writes_to) return;
      const p = `${path}.outputs[${n}].writes_to`;
      const target = outputRef(p, out.writes_to.job, out.writes_to.output);
      if (target && (target.writes_to || !target.buffered)) c.fail(p, `only a buffered output (buffered: true) can have several writers; jobs.${out.writes_to.job}.outputs[${out.writes_to.output}] is not one`);
    });
    if (j.worker_pool && !poolNames.has(j.worker_pool)) c.fail(`${path}.worker_pool`, `no worker pool named "${j.worker_pool}" in worker_pools`);
    if (j.operator === 'sql') {
      j.outputs.forEach((out, n) => {
        if (out && !out.writes_to && out.backend === 'postgres' && out.update_strategy === 'append' && !out.cursor) {
          c.warnings.push({
            path: `${path}.outputs[${n}].cursor`,
            message: 'without a cursor column this append output only ever inserts: after a reorg a re-derived row keeps its old values and a retracted range keeps its rows; set cursor (e.g. block_number) to have each range rewritten (ADR 0022)',
          });
        }
      });
    }
    const source = j.inputs.length === 0;
    if (source && j.operator && j.operator !== 'cryo_ingest' && j.operator !== 'user') c.fail(`${path}.inputs`, `operator ${j.operator} needs at least one input`);
    if (j.operator === 'cryo_ingest' && j.inputs.length > 0) c.fail(`${path}.inputs`, 'cryo_ingest is a source: it reads the chain, not datasets');
    // Built-in operators' configs are checked here, field by field, as the operators will read them.
    if (j.operator === 'cryo_ingest') {
      for (const v of parseCryoConfig(j.config, j.outputs.length).violations) c.fail(`${path}.config.${v.field}`, v.reason);
      j.outputs.forEach((o, n) => o && !o.writes_to && o.backend !== 's3' && c.fail(`${path}.outputs[${n}].backend`, 'cryo_ingest writes Parquet files: use backend s3'));
    }
    if (j.operator === 'range_aggregator' || j.operator === 'range_splitter') {
      const parsed = j.operator === 'range_aggregator' ? parseAggregatorConfig(j.config) : parseSplitterConfig(j.config);
      for (const v of parsed.violations) c.fail(`${path}.config.${v.field}`, v.reason);
      if (j.outputs.length !== 1) c.fail(`${path}.outputs`, `${j.operator} has exactly one output`);
    }
    if (j.operator === 'sql') {
      if (typeof j.config.sql !== 'string' || !j.config.sql.trim()) c.fail(`${path}.config.sql`, 'is required: one SELECT statement over input_0');
      for (const key of Object.keys(j.config)) if (key !== 'sql') c.fail(`${path}.config.${key}`, 'unknown field; sql takes only sql');
      if (j.outputs.length !== 1) c.fail(`${path}.outputs`, 'sql writes exactly one output');
    }
  });

  // Cycles: depth-first over in-DAG edges, reporting one path per cycle.
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, trail: string[]): void => {
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') {
      const cycle = [...trail.slice(trail.indexOf(name)), name];
      c.fail(`jobs[${byName.get(name)!.index}].inputs`, `cycle: ${cycle.join(' → ')}`);
      return;
    }
    state.set(name, 'visiting');
    for (const input of byName.get(name)!.job.inputs) {
      if ('job' in input.from && byName.has(input.from.job) && input.from.job !== name) visit(input.from.job, [...trail, name]);
    }
    state.set(name, 'done');
  };
  for (const name of byName.keys()) visit(name, []);

  const published = new Map<string, number>();
  const publishedOutputs = new Map<string, number>();
  publish.forEach((p, i) => {
    if (!p) return;
    const path = `publish[${i}]`;
    const target = byName.get(p.job);
    if (!target) return void c.fail(`${path}.job`, `no job named "${p.job}" in this DAG`);
    if (p.output_index >= target.job.outputs.length) {
      return void c.fail(`${path}.output_index`, `job "${p.job}" has ${target.job.outputs.length} output(s); index ${p.output_index} does not exist`);
    }
    if (target.job.outputs[p.output_index]?.writes_to) {
      return void c.fail(`${path}.output_index`, `jobs.${p.job}.outputs[${p.output_index}] writes into another job's dataset; publish that one instead`);
    }
    if (published.has(p.dataset_name)) c.fail(`${path}.dataset_name`, `"${p.dataset_name}" is already published by publish[${published.get(p.dataset_name)}]`);
    else published.set(p.dataset_name, i);
    const key = `${p.job}#${p.output_index}`;
    if (publishedOutputs.has(key)) c.fail(path, `this output is already published by publish[${publishedOutputs.get(key)}]; an output has one name`);
    else publishedOutputs.set(key, i);
  });
}

function duplicates(c: Checker, names: (string | undefined)[], path: string, what: string): void {
  const seen = new Map<string, number>();
  names.forEach((n, i) => {
    if (n === undefined) return;
    if (seen.has(n)) c.fail(`${path}[${i}].name`, `duplicate ${what} name "${n}" (also ${path}[${seen.get(n)}])`);
    else seen.set(n, i);
  });
}

/** `timeout: 900`, `"15m"`, `"2h"`, `"30s"` → seconds. */
function duration(c: Checker, path: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  let seconds: number | undefined;
  if (typeof v === 'number' && Number.isInteger(v)) seconds = v;
  else if (typeof v === 'string') {
    const m = /^(\d{1,7})(s|m|h|d)$/.exec(v.trim());
    if (m) seconds = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd'];
  }
  if (seconds === undefined) return c.fail(path, `must be seconds (an integer) or a duration like "30s", "15m", "2h", "1d"; got ${JSON.stringify(v)}`);
  if (seconds < 1 || seconds > LIMITS.timeoutSeconds) return c.fail(path, `must be between 1 second and ${LIMITS.timeoutSeconds / 86400} days`);
  return seconds;
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(typeof v === 'string' ? truncate(v) : v)}`;
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
