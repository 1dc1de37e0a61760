import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { sql, sqlOne } from '../../common/db';
import { notFound } from '../../common/errors';

const VERSION_COLUMNS = `v.number, v.status, v.spec_hash, u.email AS author, v.created_at`;

/** DAGs and their versions, read side. Every method is scoped to one org. */
@Injectable()
export class DagsService {
  constructor(private readonly db: DataSource) {}

  list(orgId: string) {
    return sql(
      this.db,
      `SELECT g.name, a.number AS active_version, (SELECT max(number) FROM dag_versions WHERE dag_id = g.id) AS latest_version, g.created_at
         FROM dags g LEFT JOIN dag_versions a ON a.id = g.active_version_id
        WHERE g.org_id = $1 ORDER BY g.name`,
      [orgId],
    );
  }

  async get(orgId: string, name: string) {
    const dag = await this.dag(orgId, name);
    const active = await sqlOne<{ spec: unknown }>(
      this.db,
      `SELECT ${VERSION_COLUMNS}, v.spec FROM dag_versions v JOIN users u ON u.id = v.author_id WHERE v.id = $1`,
      [dag.active_version_id],
    );
    const latest = await sqlOne(
      this.db,
      `SELECT ${VERSION_COLUMNS} FROM dag_versions v JOIN users u ON u.id = v.author_id WHERE v.dag_id = $1 ORDER BY v.number DESC LIMIT 1`,
      [dag.id],
    );
    const datasets = await sql(
      this.db,
      `SELECT d.job_name AS job, d.output_index, d.dataset_uuid, d.dataset_name, d.backend, p.dataset_version AS current_version
         FROM datasets d LEFT JOIN dag_dataset_pointers p ON p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid
        WHERE d.dag_id = $1 ORDER BY d.job_name, d.output_index`,
      [dag.id],
    );
    const { spec, ...activeVersion } = active ?? { spec: null };
    return { name: dag.name, created_at: dag.created_at, active_version: active ? activeVersion : null, latest_version: latest, spec, datasets };
  }

  async versions(orgId: string, name: string) {
    const dag = await this.dag(orgId, name);
    return sql(this.db, `SELECT ${VERSION_COLUMNS} FROM dag_versions v JOIN users u ON u.id = v.author_id WHERE v.dag_id = $1 ORDER BY v.number`, [dag.id]);
  }

  async version(orgId: string, name: string, n: number) {
    const dag = await this.dag(orgId, name);
    const v = await sqlOne(
      this.db,
      `SELECT ${VERSION_COLUMNS}, v.spec, v.spec_text, v.plan FROM dag_versions v JOIN users u ON u.id = v.author_id WHERE v.dag_id = $1 AND v.number = $2`,
      [dag.id, n],
    );
    if (!v) throw notFound('dag_version_not_found', `DAG "${name}" has no version ${n}`);
    return v;
  }

  private async dag(orgId: string, name: string) {
    const dag = await sqlOne<{ id: string; name: string; active_version_id: string | null; created_at: Date }>(
      this.db,
      `SELECT id, name, active_version_id, created_at FROM dags WHERE org_id = $1 AND name = $2`,
      [orgId, name],
    );
    if (!dag) throw notFound('dag_not_found', `no DAG named "${name}"`);
    return dag;
  }
}
