import { createHash } from 'node:crypto';
import { DagSpec, EXECUTION_FIELDS, JobSpec, MATERIALIZATION_FIELDS, SpecWarning } from './dag-spec';

export type JobChange = 'added' | 'removed' | 'materialization' | 'execution' | 'unchanged';

export interface OutputPlan {
  index: number;
  /** Null when the output gets a new dataset_uuid at deploy. */
  dataset_uuid: string | null;
  published_as: string | null;
  /** For `writes_to` outputs: the buffered output whose dataset this one shares. */
  shares?: { job: string; output: number };
}

export interface JobPlan {
  name: string;
  change: JobChange;
  changed_fields: string[];
  rematerialize: boolean;
  outputs: OutputPlan[];
}

export interface PublishChange {
  job: string;
  output_index: number;
  dataset_name: string;
  previous_name?: string;
}

export interface DeployPlan {
  dag: string;
  spec_hash: string;
  change: 'create' | 'update' | 'unchanged';
  /** immediate: becomes the active version now. after_rematerialization: stored pending until its data is rebuilt and cut over. */
  activation: 'immediate' | 'after_rematerialization' | 'none';
  jobs: JobPlan[];
  /** Edited jobs plus everything downstream of them, in spec order. */
  rematerialize: string[];
  publish: { added: PublishChange[]; removed: PublishChange[]; renamed: PublishChange[] };
  warnings: SpecWarning[];
}

/** Key-sorted JSON, so the hash depends on content, not formatting or key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    return `{${entries.sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function specHash(spec: DagSpec): string {
  return createHash('sha256').update(canonicalJson(spec)).digest('hex');
}

/** Existing datasets of the DAG, by `job#output`. */
export type ExistingDatasets = Map<string, { dataset_uuid: string; dataset_name: string | null }>;

/**
 * What deploying `next` over `previous` (the active version's spec, if any) does: which jobs
 * change and how, what must be rebuilt (edited jobs + transitive downstream), and which publish
 * names change — metadata only.
 */
export function planDeploy(
  next: DagSpec,
  previous: DagSpec | undefined,
  existing: ExistingDatasets,
  warnings: SpecWarning[],
  /**
   * The spec hashes of the DAG's newest stored version (active or pending) and of its active
   * version: deploying either again is a no-op. The active one may be older than the newest
   * (a pending version overtook it); its spec again is still nothing to deploy.
   */
  stored: { latest?: string; active?: string } = {},
): DeployPlan {
  const hash = specHash(next);
  const prevJobs = new Map((previous?.jobs ?? []).map((j) => [j.name, j]));
  const nextJobs = new Map(next.jobs.map((j) => [j.name, j]));
  const publishedName = new Map(next.publish.map((p) => [`${p.job}#${p.output_index}`, p.dataset_name]));

  const jobs: JobPlan[] = next.jobs.map((job) => {
    const before = prevJobs.get(job.name);
    const changedM = before ? changedFields(job, before, MATERIALIZATION_FIELDS) : [];
    const changedE = before ? changedFields(job, before, EXECUTION_FIELDS) : [];
    const change: JobChange = !before ? 'added' : changedM.length ? 'materialization' : changedE.length ? 'execution' : 'unchanged';
    return {
      name: job.name,
      change,
      changed_fields: [...changedM, ...changedE],
      rematerialize: false,
      outputs: job.outputs.map((out, index) =>
        out.writes_to
          ? { index, dataset_uuid: existing.get(`${out.writes_to.job}#${out.writes_to.output}`)?.dataset_uuid ?? null, published_as: null, shares: out.writes_to }
          : { index, dataset_uuid: existing.get(`${job.name}#${index}`)?.dataset_uuid ?? null, published_as: publishedName.get(`${job.name}#${index}`) ?? null },
      ),
    };
  });
  for (const name of prevJobs.keys()) {
    if (!nextJobs.has(name)) jobs.push({ name, change: 'removed', changed_fields: [], rematerialize: false, outputs: [] });
  }

  const rematerialize = previous ? downstreamOf(next, jobs.filter((j) => j.change === 'added' || j.change === 'materialization').map((j) => j.name)) : [];
  for (const j of jobs) j.rematerialize = rematerialize.includes(j.name);

  const before = new Map<string, string>();
  for (const [key, ds] of existing) if (ds.dataset_name) before.set(key, ds.dataset_name);
  const publish: DeployPlan['publish'] = { added: [], removed: [], renamed: [] };
  for (const p of next.publish) {
    const key = `${p.job}#${p.output_index}`;
    const old = before.get(key);
    if (!old) publish.added.push({ ...p });
    else if (old !== p.dataset_name) publish.renamed.push({ ...p, previous_name: old });
  }
  for (const [key, name] of before) {
    if (!publishedName.has(key)) {
      const [job, index] = key.split('#');
      publish.removed.push({ job: job!, output_index: Number(index), dataset_name: name });
    }
  }

  const unchanged = hash === stored.latest || hash === stored.active;
  return {
    dag: next.name,
    spec_hash: hash,
    change: !previous ? 'create' : unchanged ? 'unchanged' : 'update',
    activation: unchanged ? 'none' : rematerialize.length ? 'after_rematerialization' : 'immediate',
    jobs,
    rematerialize,
    publish,
    warnings,
  };
}

function changedFields(a: JobSpec, b: JobSpec, fields: readonly string[]): string[] {
  return fields.filter((f) => canonicalJson((a as unknown as Record<string, unknown>)[f]) !== canonicalJson((b as unknown as Record<string, unknown>)[f]));
}

/** The seeds plus every job that reads from them, transitively, listed in spec order. */
function downstreamOf(spec: DagSpec, seeds: string[]): string[] {
  const readers = new Map<string, string[]>();
  for (const job of spec.jobs) {
    for (const input of job.inputs) {
      if ('job' in input.from) readers.set(input.from.job, [...(readers.get(input.from.job) ?? []), job.name]);
    }
  }
  // A writer into a shared buffered dataset changes what that dataset's readers see, too.
  for (const job of spec.jobs) {
    for (const out of job.outputs) if (out.writes_to) readers.set(job.name, [...(readers.get(job.name) ?? []), ...(readers.get(out.writes_to.job) ?? [])]);
  }
  const affected = new Set<string>();
  const stack = [...seeds];
  while (stack.length) {
    const name = stack.pop()!;
    if (affected.has(name)) continue;
    affected.add(name);
    stack.push(...(readers.get(name) ?? []));
  }
  return spec.jobs.map((j) => j.name).filter((n) => affected.has(n));
}
