import { Injectable } from '@nestjs/common';
import { sqlOne, type Queryable } from '../../common/db';
import type { DagSpec } from '../../registry/dags/dag-spec';

/**
 * DAG versions are immutable, so their parsed specs are cached by version id: the hot path
 * (metering, fetch, events) never re-reads and re-parses a spec it has seen.
 */
@Injectable()
export class SpecCache {
  private readonly specs = new Map<string, DagSpec>();

  async get(db: Queryable, versionId: string): Promise<DagSpec> {
    let spec = this.specs.get(versionId);
    if (!spec) {
      const row = await sqlOne<{ spec: DagSpec }>(db, `SELECT spec FROM dag_versions WHERE id = $1`, [versionId]);
      if (!row) throw new Error(`no DAG version ${versionId}`);
      spec = row.spec;
      if (this.specs.size > 10_000) this.specs.clear();
      this.specs.set(versionId, spec);
    }
    return spec;
  }
}

/** Each output of a job as the key of the dataset it writes (`job#index`; writes_to outputs name their target). */
export function outputKeys(spec: DagSpec, jobName: string): string[] {
  const job = spec.jobs.find((j) => j.name === jobName);
  return (job?.outputs ?? []).map((o, i) => (o.writes_to ? `${o.writes_to.job}#${o.writes_to.output}` : `${jobName}#${i}`));
}
