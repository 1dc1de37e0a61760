import { HttpStatus, Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { Queryable, sql, sqlOne } from '../../common/db';
import { forbidden, notFound, TraceError } from '../../common/errors';
import { isOrgAdmin, type Principal } from '../../common/identity';
import { DatasetsService } from '../datasets/datasets.service';
import { SecretsService } from '../secrets/secrets.service';
import { DagSpec, SpecViolation, SpecWarning } from './dag-spec';
import { parseSpecText } from './dag-spec.parser';
import { validateDagSpec } from './dag-spec.validator';
import { DeployPlan, ExistingDatasets, planDeploy } from './dag-plan';

/** The org role that may create new DAGs (besides org admins). */
export const DEPLOYER_ROLE = 'deployer';

interface DagRow {
  id: string;
  name: string;
  active_version_id: string | null;
}

export interface VersionView {
  number: number;
  status: 'active' | 'pending' | 'superseded';
  spec_hash: string;
  author: string;
  created_at: Date;
}

export interface DeployResult {
  created_version: boolean;
  message: string;
  version: VersionView;
  plan: DeployPlan;
}

interface Prepared {
  spec: DagSpec;
  text: string;
  dag?: DagRow;
  plan: DeployPlan;
  /** The spec hash of the DAG's newest version (active or pending). */
  latestHash?: string;
}

/**
 * Validate → check against the registry → plan → (deploy) store an immutable dag_version.
 * The first deploy of a DAG becomes active at once and creates its datasets; later deploys that
 * only change execution settings or publish names activate at once too (no data changes), and
 * those that change what jobs write are stored pending until they are rematerialized.
 */
@Injectable()
export class DagDeployService {
  constructor(
    private readonly db: DataSource,
    private readonly datasets: DatasetsService,
    private readonly secrets: SecretsService,
  ) {}

  async validate(principal: Principal, body: unknown): Promise<DeployPlan> {
    return (await this.prepare(principal, parseAndValidate(body), this.db.manager)).plan;
  }

  async deploy(principal: Principal, body: unknown): Promise<DeployResult> {
    return this.db.transaction(async (tx) => {
      const checked = parseAndValidate(body);
      // Deploys of one DAG are serialised, and the registry checks run under that lock.
      await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`dag:${principal.orgId}:${checked.spec.name}`]);
      const { spec, text, dag, plan, latestHash } = await this.prepare(principal, checked, tx);
      await this.assertMayDeploy(principal, dag, tx);

      if (dag && plan.change === 'unchanged') {
        const latest = (await this.latestVersion(tx, dag.id))!;
        if (latestHash === plan.spec_hash) return { created_version: false, message: `identical to version ${latest.number}; nothing to deploy`, version: latest, plan };
        // The active version's spec again, while a newer version waits pending: nothing differs
        // from what is serving, so nothing is stored, activated or superseded.
        const active = (await this.versionView(tx, dag.active_version_id!))!;
        return {
          created_version: false,
          message: `identical to the active version ${active.number}; nothing to deploy (version ${latest.number} stays ${latest.status})`,
          version: active,
          plan,
        };
      }

      const dagId = dag?.id ?? (await this.createDag(tx, principal, spec.name));
      const status = plan.activation === 'immediate' ? 'active' : 'pending';
      const version = (await sqlOne<{ id: string; number: number }>(
        tx,
        `INSERT INTO dag_versions (dag_id, number, spec, spec_text, spec_hash, plan, status, author_id)
         VALUES ($1, (SELECT coalesce(max(number), 0) + 1 FROM dag_versions WHERE dag_id = $1), $2, $3, $4, $5, $6, $7)
         RETURNING id, number`,
        [dagId, JSON.stringify(spec), text, plan.spec_hash, JSON.stringify(plan), status, principal.userId],
      ))!;
      const uuids = await this.ensureDatasets(tx, principal.orgId, dagId, spec);
      for (const job of plan.jobs) for (const out of job.outputs) out.dataset_uuid ??= uuids.get(out.shares ? `${out.shares.job}#${out.shares.output}` : `${job.name}#${out.index}`) ?? null;
      if (status === 'active') await this.activate(tx, principal.orgId, dagId, version.id, spec);
      await tx.query(`UPDATE dag_versions SET plan = $2 WHERE id = $1`, [version.id, JSON.stringify(plan)]);

      const message =
        plan.change === 'create'
          ? `created DAG "${spec.name}" at version ${version.number}`
          : status === 'active'
            ? `version ${version.number} is active (execution settings / publish names only; no data is rebuilt)`
            : `version ${version.number} is stored pending: ${plan.rematerialize.join(', ')} must be rematerialized before cutover`;
      return { created_version: true, message, version: (await this.versionView(tx, version.id))!, plan };
    });
  }

  private async prepare(principal: Principal, checked: CheckedSpec, db: Queryable): Promise<Prepared> {
    const { spec, text, locate, warnings } = checked;

    const dag = await sqlOne<DagRow>(db, `SELECT id, name, active_version_id FROM dags WHERE org_id = $1 AND name = $2`, [principal.orgId, spec.name]);
    const violations = await this.registryViolations(principal, spec, dag, db);
    if (violations.length) throw invalidSpec(violations.map((v) => ({ ...v, ...locate(v.path) })));

    const active = dag?.active_version_id
      ? await sqlOne<{ spec: DagSpec; spec_hash: string }>(db, `SELECT spec, spec_hash FROM dag_versions WHERE id = $1`, [dag.active_version_id])
      : undefined;
    const existing: ExistingDatasets = new Map();
    if (dag) {
      const rows = await sql<{ job_name: string; output_index: number; dataset_uuid: string; dataset_name: string | null }>(
        db,
        `SELECT job_name, output_index, dataset_uuid, dataset_name FROM datasets WHERE dag_id = $1`,
        [dag.id],
      );
      for (const r of rows) existing.set(`${r.job_name}#${r.output_index}`, r);
    }
    const latest = dag ? await sqlOne<{ spec_hash: string }>(db, `SELECT spec_hash FROM dag_versions WHERE dag_id = $1 ORDER BY number DESC LIMIT 1`, [dag.id]) : undefined;
    const plan = planDeploy(spec, active?.spec, existing, warnings, { latest: latest?.spec_hash, active: active?.spec_hash });
    return { spec, text, dag: dag ?? undefined, plan, latestHash: latest?.spec_hash };
  }

  /** What only the registry knows: other DAGs' names, readable datasets, the org's secrets. */
  private async registryViolations(principal: Principal, spec: DagSpec, dag: DagRow | undefined, db: Queryable): Promise<SpecViolation[]> {
    const violations: SpecViolation[] = [];

    const names = spec.publish.map((p) => p.dataset_name);
    if (names.length) {
      const taken = await sql<{ dataset_name: string; dag_name: string }>(
        db,
        `SELECT d.dataset_name, g.name AS dag_name FROM datasets d JOIN dags g ON g.id = d.dag_id
          WHERE d.org_id = $1 AND d.dataset_name = ANY ($2) AND ($3::uuid IS NULL OR d.dag_id <> $3)`,
        [principal.orgId, names, dag?.id ?? null],
      );
      const owner = new Map(taken.map((t) => [t.dataset_name, t.dag_name]));
      spec.publish.forEach((p, i) => {
        const other = owner.get(p.dataset_name);
        if (other) violations.push({ path: `publish[${i}].dataset_name`, reason: `"${p.dataset_name}" is already produced by DAG "${other}"; a dataset has one producing DAG (no cross-DAG shared writes)` });
      });
    }

    const reads = spec.jobs.flatMap((j, i) => j.inputs.map((input, n) => ({ path: `jobs[${i}].inputs[${n}].from.dataset`, from: input.from })));
    const datasetNames = [...new Set(reads.flatMap((r) => ('dataset' in r.from ? [r.from.dataset] : [])))];
    const readable = await this.datasets.resolveReadable(principal, datasetNames, db);
    for (const r of reads) {
      if (!('dataset' in r.from)) continue;
      const ds = readable.get(r.from.dataset);
      if (!ds) violations.push({ path: r.path, reason: `no published dataset "${r.from.dataset}" that you may read (read_roles decide who reads a dataset)` });
      else if (dag && ds.dag_id === dag.id) violations.push({ path: r.path, reason: `"${r.from.dataset}" is produced by this DAG; wire it with {job, output}` });
    }

    const secretRefs = spec.worker_pools.flatMap((p, i) =>
      p.slots.flatMap((s, j) => Object.entries(s.secret_env).map(([env, secret]) => ({ path: `worker_pools[${i}].slots[${j}].secret_env.${env}`, secret }))),
    );
    const missing = await this.secrets.missing(principal.orgId, [...new Set(secretRefs.map((r) => r.secret))]);
    for (const r of secretRefs) {
      if (missing.has(r.secret)) violations.push({ path: r.path, reason: `no secret named "${r.secret}" in this org; create it with PUT /v1/secrets/${r.secret}` });
    }
    return violations;
  }

  /** New DAGs: org admins and holders of the `deployer` role. Existing DAGs: org admins and its deployers. */
  private async assertMayDeploy(principal: Principal, dag: DagRow | undefined, db: Queryable): Promise<void> {
    if (isOrgAdmin(principal)) return;
    if (!dag) {
      if (principal.roles.includes(DEPLOYER_ROLE)) return;
      throw forbidden('dag_deploy_forbidden', `creating a DAG needs the org role "${DEPLOYER_ROLE}" or "admin"`);
    }
    const grant = await sqlOne(db, `SELECT 1 FROM dag_grants WHERE dag_id = $1 AND user_id = $2 AND permission = 'deploy'`, [dag.id, principal.userId]);
    if (!grant) throw forbidden('dag_deploy_forbidden', `you may not deploy DAG "${dag.name}"; an org admin can grant it`);
  }

  private async createDag(tx: EntityManager, principal: Principal, name: string): Promise<string> {
    const row = (await sqlOne<{ id: string }>(tx, `INSERT INTO dags (org_id, name, created_by) VALUES ($1, $2, $3) RETURNING id`, [principal.orgId, name, principal.userId]))!;
    await tx.query(`INSERT INTO dag_grants (dag_id, user_id, permission) VALUES ($1, $2, 'deploy')`, [row.id, principal.userId]);
    return row.id;
  }

  /** Every job output gets a dataset_uuid at deploy, published or not; uuids are stable across versions. */
  private async ensureDatasets(tx: EntityManager, orgId: string, dagId: string, spec: DagSpec): Promise<Map<string, string>> {
    for (const job of spec.jobs) {
      for (const [index, out] of job.outputs.entries()) {
        if (out.writes_to) continue;
        await tx.query(
          `INSERT INTO datasets (org_id, dag_id, job_name, output_index, backend, update_strategy, unique_key, cursor_column, partitioning, partition_key, buffered)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (dag_id, job_name, output_index) DO NOTHING`,
          [orgId, dagId, job.name, index, out.backend, out.update_strategy, out.unique_key ?? null, out.cursor ?? null, out.partitioning, out.partition_key ?? null, out.buffered],
        );
      }
    }
    const rows = await sql<{ key: string; dataset_uuid: string }>(tx, `SELECT job_name || '#' || output_index AS key, dataset_uuid FROM datasets WHERE dag_id = $1`, [dagId]);
    return new Map(rows.map((r) => [r.key, r.dataset_uuid]));
  }

  /**
   * One transaction: the version becomes the DAG's active version, publish names are applied
   * (metadata only), and every dataset without a current version gets its first one in the pointer set.
   */
  private async activate(tx: EntityManager, orgId: string, dagId: string, versionId: string, spec: DagSpec): Promise<void> {
    // The new active version supersedes the old one, and any pending version it overtakes: that
    // one will never be cut over (it was never active; `superseded` is the schema's one word for
    // "no longer a candidate", docs/architecture/dag_deployment.md).
    await tx.query(`UPDATE dag_versions SET status = 'superseded' WHERE dag_id = $1 AND status IN ('active', 'pending') AND id <> $2`, [dagId, versionId]);
    await tx.query(`UPDATE dag_versions SET status = 'active' WHERE id = $1`, [versionId]);
    await tx.query(`UPDATE dags SET active_version_id = $2 WHERE id = $1`, [dagId, versionId]);

    await tx.query(`UPDATE datasets SET dataset_name = NULL WHERE dag_id = $1 AND dataset_name IS NOT NULL`, [dagId]);
    for (const p of spec.publish) {
      await tx
        .query(`UPDATE datasets SET dataset_name = $4 WHERE dag_id = $1 AND job_name = $2 AND output_index = $3`, [dagId, p.job, p.output_index, p.dataset_name])
        .catch((err: { code?: string }) => {
          throw err.code === '23505' ? new TraceError(HttpStatus.CONFLICT, 'dataset_name_taken', `dataset name "${p.dataset_name}" was just taken by another DAG`) : err;
        });
    }

    await this.recordConsumers(tx, orgId, dagId, spec);

    // Only this spec's own outputs: datasets registered by an overtaken pending version are left alone.
    const outputs = spec.jobs.flatMap((j) => j.outputs.flatMap((o, i) => (o.writes_to ? [] : [`${j.name}#${i}`])));
    const fresh = await sql<{ dataset_uuid: string; backend: string }>(
      tx,
      `SELECT d.dataset_uuid, d.backend FROM datasets d
        WHERE d.dag_id = $1 AND d.job_name || '#' || d.output_index = ANY ($2)
          AND NOT EXISTS (SELECT 1 FROM dag_dataset_pointers p WHERE p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid)`,
      [dagId, outputs],
    );
    for (const ds of fresh) {
      const [version] = await sql<{ dataset_version: string }>(tx, `SELECT gen_random_uuid() AS dataset_version`);
      const v = version!.dataset_version;
      const location =
        ds.backend === 's3'
          ? `org/${orgId}/dataset/${ds.dataset_uuid}/version/${v}/`
          : `"ds_${ds.dataset_uuid.replace(/-/g, '')}"."v_${v.replace(/-/g, '')}"`;
      await tx.query(`INSERT INTO dataset_versions (dataset_version, dataset_uuid, dag_version_id, status, location) VALUES ($1, $2, $3, 'building', $4)`, [v, ds.dataset_uuid, versionId, location]);
      await tx.query(`INSERT INTO dag_dataset_pointers (dag_id, dataset_uuid, dataset_version) VALUES ($1, $2, $3)`, [dagId, ds.dataset_uuid, v]);
    }
  }

  /**
   * Which dataset each job input reads, by uuid (so publish renames never break a subscription):
   * the dispatcher fans each event out to exactly these consumers.
   */
  private async recordConsumers(tx: EntityManager, orgId: string, dagId: string, spec: DagSpec): Promise<void> {
    await tx.query(`DELETE FROM dataset_consumers WHERE dag_id = $1`, [dagId]);
    const shared = new Map<string, string>();
    for (const job of spec.jobs) {
      job.outputs.forEach((out, i) => out.writes_to && shared.set(`${job.name}#${i}`, `${out.writes_to.job}#${out.writes_to.output}`));
    }
    for (const job of spec.jobs) {
      for (const [index, input] of job.inputs.entries()) {
        let source: { dataset_uuid: string } | undefined;
        if ('dataset' in input.from) {
          source = await sqlOne(tx, `SELECT dataset_uuid FROM datasets WHERE org_id = $1 AND dataset_name = $2`, [orgId, input.from.dataset]);
        } else {
          const key = `${input.from.job}#${input.from.output}`;
          const [producer, output] = (shared.get(key) ?? key).split('#');
          source = await sqlOne(tx, `SELECT dataset_uuid FROM datasets WHERE dag_id = $1 AND job_name = $2 AND output_index = $3`, [dagId, producer, Number(output)]);
        }
        if (!source) throw new Error(`input ${job.name}.inputs[${index}] resolves to no dataset at activation`);
        await tx.query(`INSERT INTO dataset_consumers (dataset_uuid, dag_id, job_name, input_index) VALUES ($1, $2, $3, $4)`, [source.dataset_uuid, dagId, job.name, index]);
      }
    }
  }

  async grant(orgId: string, dagName: string, userIds: string[], permission: 'deploy' | 'trigger'): Promise<void> {
    await this.db.transaction(async (tx) => {
      const dag = await sqlOne<{ id: string }>(tx, `SELECT id FROM dags WHERE org_id = $1 AND name = $2`, [orgId, dagName]);
      if (!dag) throw notFound('dag_not_found', `no DAG named "${dagName}"`);
      const members = await sql<{ user_id: string }>(tx, `SELECT user_id FROM org_memberships WHERE org_id = $1 AND user_id = ANY ($2)`, [orgId, userIds]);
      const known = new Set(members.map((m) => m.user_id));
      const strangers = userIds.filter((u) => !known.has(u));
      if (strangers.length) throw notFound('member_not_found', `not members of this org: ${strangers.join(', ')}`);
      for (const u of userIds) {
        await tx.query(`INSERT INTO dag_grants (dag_id, user_id, permission) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, [dag.id, u, permission]);
      }
    });
  }

  async latestVersion(db: Queryable, dagId: string): Promise<VersionView | undefined> {
    const row = await sqlOne<{ id: string }>(db, `SELECT id FROM dag_versions WHERE dag_id = $1 ORDER BY number DESC LIMIT 1`, [dagId]);
    return row ? this.versionView(db, row.id) : undefined;
  }

  private versionView(db: Queryable, id: string): Promise<VersionView | undefined> {
    return sqlOne<VersionView>(
      db,
      `SELECT v.number, v.status, v.spec_hash, u.email AS author, v.created_at FROM dag_versions v JOIN users u ON u.id = v.author_id WHERE v.id = $1`,
      [id],
    );
  }
}

interface CheckedSpec {
  spec: DagSpec;
  text: string;
  warnings: SpecWarning[];
  locate: (path: string) => { line: number; column: number } | undefined;
}

/** The checks that need nothing but the spec: syntax, shape, names, references, cycles. */
export function parseAndValidate(body: unknown): CheckedSpec {
  const text = typeof body === 'string' ? body : JSON.stringify(body ?? null);
  const parsed = parseSpecText(text);
  if (parsed.violations.length) throw invalidSpec(parsed.violations);
  const check = validateDagSpec(parsed.value);
  if (!check.spec) throw invalidSpec(check.violations.map((v) => ({ ...v, ...parsed.locate(v.path) })));
  return { spec: check.spec, text, warnings: check.warnings, locate: parsed.locate };
}

export function invalidSpec(violations: SpecViolation[]): TraceError {
  const shown = violations.slice(0, 3).map((v) => `${v.path || '(spec)'}: ${v.reason}`).join('; ');
  const more = violations.length > 3 ? ` (and ${violations.length - 3} more)` : '';
  return new TraceError(HttpStatus.BAD_REQUEST, 'invalid_dag_spec', `the DAG spec has ${violations.length} problem(s): ${shown}${more}`, violations);
}
