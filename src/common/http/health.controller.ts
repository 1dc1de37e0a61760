import { Controller, Get, Header, HttpStatus, Res } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { DataSource } from 'typeorm';
import { TraceConfig } from '../../config';
import { Public } from '../auth';
import { isDatabaseUnavailable } from '../errors';
import { BackgroundLoops, DatabaseWatchdog, NodeRegistry } from '../lifecycle';
import { MetricsRegistry } from '../metrics/metrics';

const DB_PROBE_TIMEOUT_MS = 2000;

/**
 * Why the database is down, for /health (details are in the logs, not on this public route):
 * `unreachable` — no server accepts connections, or it is shutting down, starting up or
 * recovering; `timeout` — no answer within DB_PROBE_TIMEOUT_MS; `error` — it refused us otherwise.
 */
type DatabaseDownReason = 'unreachable' | 'timeout' | 'error';

@ApiTags('health')
@Controller()
export class HealthController {
  constructor(
    private readonly config: TraceConfig,
    private readonly db: DataSource,
    private readonly loops: BackgroundLoops,
    private readonly node: NodeRegistry,
    private readonly metrics: MetricsRegistry,
    private readonly watchdog: DatabaseWatchdog,
  ) {}

  /** 200 only when the system database answers; 503 otherwise, with why and since when. No authentication. */
  @Public()
  @Get('health')
  async health(@Res({ passthrough: true }) res: Response) {
    const down = await this.databaseDown();
    res.status(down ? HttpStatus.SERVICE_UNAVAILABLE : HttpStatus.OK);
    return {
      status: down ? 'unavailable' : 'ok',
      roles: this.config.roles,
      database: down ? 'down' : 'up',
      ...(down && { database_reason: down, database_down_since: this.watchdog.downSince?.toISOString() }),
      node_id: this.node.nodeId,
      loops: this.loops.names(),
    };
  }

  @Public()
  @Get('metrics')
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  async prometheus(): Promise<string> {
    return this.metrics.registry.metrics();
  }

  /** Undefined when the database answers. */
  private async databaseDown(): Promise<DatabaseDownReason | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<DatabaseDownReason>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), DB_PROBE_TIMEOUT_MS);
    });
    const probe = this.db
      .query('SELECT 1')
      .then(() => undefined)
      .catch((err: unknown): DatabaseDownReason => (isDatabaseUnavailable(err) ? 'unreachable' : 'error'));
    try {
      return await Promise.race([probe, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
