import { HttpStatus, Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { Queryable, sql, sqlOne } from '../../common/db';
import { notFound, TraceError } from '../../common/errors';
import { OBJECT_STORE, type ObjectStore } from '../../common/storage';
import type { Principal } from '../../common/identity';
import { readablePredicate } from './dataset-access';

export interface DatasetRow {
  dataset_uuid: string;
  dataset_name: string | null;
  org_id: string;
  dag_id: string;
  dag_name: string;
  job_name: string;
  output_index: number;
  backend: 'postgres' | 's3';
  update_strategy: 'replace' | 'append';
  unique_key: string[] | null;
  cursor_column: string | null;
  partitioning: string;
  partition_key: string | null;
  buffered: boolean;
  read_roles: string[];
  current_version: string | null;
  created_at: Date;
}

export interface DatasetVersionView {
  dataset_version: string;
  status: string;
  location: string;
  dag_version: number;
  current: boolean;
  created_at: Date;
}

const DATASET_SELECT = `
  SELECT d.dataset_uuid, d.dataset_name, d.org_id, d.dag_id, g.name AS dag_name, d.job_name, d.output_index,
         d.backend, d.update_strategy, d.unique_key, d.cursor_column, d.partitioning, d.partition_key,
         d.buffered, d.read_roles, p.dataset_version AS current_version, d.created_at
    FROM datasets d
    JOIN dags g ON g.id = d.dag_id
    LEFT JOIN dag_dataset_pointers p ON p.dag_id = d.dag_id AND p.dataset_uuid = d.dataset_uuid`;

/**
 * The dataset registry, read side. Only published datasets (those with a name) are visible by
 * name, and a dataset the caller may not read is answered exactly like one that does not exist.
 */
@Injectable()
export class DatasetsService {
  constructor(
    private readonly db: DataSource,
    @Inject(OBJECT_STORE) private readonly store: ObjectStore,
  ) {}

  async listReadable(principal: Principal): Promise<DatasetRow[]> {
    const params: unknown[] = [];
    const readable = readablePredicate('d', principal, params);
    return sql<DatasetRow>(this.db, `${DATASET_SELECT} WHERE d.dataset_name IS NOT NULL AND ${readable} ORDER BY d.dataset_name`, params);
  }

  /** Published datasets by name that the caller may read; names absent from the result are unknown or unreadable. */
  async resolveReadable(principal: Principal, names: string[], db: Queryable = this.db): Promise<Map<string, DatasetRow>> {
    if (names.length === 0) return new Map();
    const params: unknown[] = [names];
    const readable = readablePredicate('d', principal, params);
    const rows = await sql<DatasetRow>(db, `${DATASET_SELECT} WHERE d.dataset_name = ANY ($1) AND ${readable}`, params);
    return new Map(rows.map((r) => [r.dataset_name!, r]));
  }

  async getReadable(principal: Principal, name: string): Promise<DatasetRow> {
    const row = (await this.resolveReadable(principal, [name])).get(name);
    if (!row) throw notFound('dataset_not_found', `no dataset named "${name}" (or you may not read it)`);
    return row;
  }

  versions(datasetUuid: string): Promise<DatasetVersionView[]> {
    return sql<DatasetVersionView>(
      this.db,
      `SELECT v.dataset_version, v.status, v.location, dv.number AS dag_version,
              (p.dataset_version IS NOT NULL) AS current, v.created_at
         FROM dataset_versions v
         JOIN dag_versions dv ON dv.id = v.dag_version_id
         LEFT JOIN dag_dataset_pointers p ON p.dataset_version = v.dataset_version
        WHERE v.dataset_uuid = $1
        ORDER BY v.created_at`,
      [datasetUuid],
    );
  }

  /**
   * Org admins only (the controller enforces it): the one way data is ever deleted. A version that
   * is current for its DAG is refused. The storage goes first, inside the transaction that holds
   * the version's row: if deleting fails, nothing is marked and the purge can be asked again.
   */
  async purge(orgId: string, name: string, version: string): Promise<{ dataset_name: string; dataset_version: string; status: 'purged'; deleted: string }> {
    return this.db.transaction(async (tx) => {
      const v = await sqlOne<{ dataset_uuid: string; status: string; location: string; backend: string; current: boolean }>(
        tx,
        `SELECT v.dataset_uuid, v.status, v.location, d.backend,
                EXISTS (SELECT 1 FROM dag_dataset_pointers p WHERE p.dataset_version = v.dataset_version) AS current
           FROM dataset_versions v JOIN datasets d ON d.dataset_uuid = v.dataset_uuid
          WHERE d.org_id = $1 AND d.dataset_name = $2 AND v.dataset_version = $3
          FOR UPDATE OF v`,
        [orgId, name, version],
      );
      if (!v) throw notFound('dataset_version_not_found', `dataset "${name}" has no version ${version}`);
      if (v.status === 'purged') return { dataset_name: name, dataset_version: version, status: 'purged' as const, deleted: 'nothing: it was already purged' };
      if (v.current) throw new TraceError(HttpStatus.CONFLICT, 'version_in_use', `version ${version} of "${name}" is its DAG's current version; only versions no DAG points at can be purged`);
      let deleted: string;
      if (v.backend === 's3') {
        const n = await this.store.deletePrefix(v.location);
        deleted = `${n} object(s) under ${v.location}`;
      } else {
        await tx.query(`DROP TABLE IF EXISTS ${postgresLocation(v.location)}`);
        deleted = `table ${v.location}`;
      }
      await tx.query(`UPDATE dataset_versions SET status = 'purged' WHERE dataset_version = $1`, [version]);
      return { dataset_name: name, dataset_version: version, status: 'purged' as const, deleted };
    });
  }

  /** Org admins only (the controller enforces it); never set from DAG config. */
  async setReadRoles(orgId: string, name: string, roles: string[]): Promise<DatasetRow> {
    const updated = await sqlOne<{ dataset_uuid: string }>(
      this.db,
      `UPDATE datasets SET read_roles = $3 WHERE org_id = $1 AND dataset_name = $2 RETURNING dataset_uuid`,
      [orgId, name, [...new Set(roles)].sort()],
    );
    if (!updated) throw notFound('dataset_not_found', `no dataset named "${name}"`);
    return (await sqlOne<DatasetRow>(this.db, `${DATASET_SELECT} WHERE d.dataset_uuid = $1`, [updated.dataset_uuid]))!;
  }
}

export function datasetView(row: DatasetRow, versions?: DatasetVersionView[]) {
  return {
    dataset_name: row.dataset_name,
    dataset_uuid: row.dataset_uuid,
    producer: { dag: row.dag_name, job: row.job_name, output_index: row.output_index },
    backend: row.backend,
    update_strategy: row.update_strategy,
    unique_key: row.unique_key,
    cursor: row.cursor_column,
    partitioning: row.partitioning,
    partition_key: row.partition_key,
    buffered: row.buffered,
    read_roles: row.read_roles,
    current_version: row.current_version,
    ...(versions ? { versions } : {}),
    created_at: row.created_at,
  };
}

/** A recorded Postgres location, re-checked before it goes into SQL. */
function postgresLocation(location: string): string {
  if (!/^"ds_[0-9a-f]{32}"\."v_[0-9a-f]{32}"$/.test(location)) throw new Error(`not a Postgres dataset location: ${location}`);
  return location;
}
