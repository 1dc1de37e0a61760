import { BeforeApplicationShutdown, Inject, Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { DataSource } from 'typeorm';
import { TraceConfig } from '../../config';
import { MIGRATIONS_APPLIED } from '../db/database.module';
import { BackgroundLoops } from './background-loops';

/**
 * Every running Trace process is a row in `nodes` with its roles, kept fresh by a heartbeat and
 * removed when it drains. Other components use it to tell a live process from a dead one.
 */
@Injectable()
export class NodeRegistry implements BeforeApplicationShutdown {
  readonly nodeId = randomUUID();
  private registered = false;

  constructor(
    private readonly db: DataSource,
    private readonly config: TraceConfig,
    private readonly loops: BackgroundLoops,
    @Inject(MIGRATIONS_APPLIED) _schemaReady: unknown,
  ) {
    loops.register({ name: 'node.heartbeat', intervalMs: config.lifecycle.heartbeatIntervalMs, tick: () => this.heartbeat() });
  }

  async heartbeat(): Promise<void> {
    await this.db.query(
      `INSERT INTO nodes (id, roles, hostname, pid) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`,
      [this.nodeId, this.config.roles, hostname(), process.pid],
    );
    this.registered = true;
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.loops.stop(); // no heartbeat may re-insert the row after we delete it
    if (this.registered) await this.db.query('DELETE FROM nodes WHERE id = $1', [this.nodeId]);
  }
}
