import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { sql } from '../common/db';
import { BackgroundLoops } from '../common/lifecycle';
import { JsonLogger } from '../common/logging/json-logger';
import { TraceConfig } from '../config';

/**
 * Removes `nodes` rows whose heartbeat stopped (a process that crashed or was killed without
 * draining), so the dispatcher can treat their in-flight work as lost rather than wait for it.
 */
@Injectable()
export class NodeReaper {
  constructor(
    private readonly db: DataSource,
    private readonly config: TraceConfig,
    private readonly logger: JsonLogger,
    loops: BackgroundLoops,
  ) {
    loops.register({ name: 'dispatcher.node-reaper', intervalMs: config.lifecycle.heartbeatIntervalMs, tick: () => this.reap().then(() => undefined) });
  }

  /** Returns the ids of the nodes it removed. */
  async reap(): Promise<string[]> {
    const removed = await sql<{ id: string; roles: string[] }>(
      this.db,
      `DELETE FROM nodes WHERE heartbeat_at < now() - make_interval(secs => $1::double precision / 1000) RETURNING id, roles`,
      [this.config.lifecycle.nodeExpiryMs],
    );
    if (removed.length) this.logger.event('warn', 'NodeReaper', 'removed nodes whose heartbeat stopped', { nodes: removed });
    return removed.map((r) => r.id);
  }
}
