import { Controller, Get, Header, HttpStatus, Res } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { DataSource } from 'typeorm';
import { TraceConfig } from '../../config';
import { Public } from '../auth';
import { BackgroundLoops, NodeRegistry } from '../lifecycle';
import { MetricsRegistry } from '../metrics/metrics';

const DB_PROBE_TIMEOUT_MS = 2000;

@ApiTags('health')
@Controller()
export class HealthController {
  constructor(
    private readonly config: TraceConfig,
    private readonly db: DataSource,
    private readonly loops: BackgroundLoops,
    private readonly node: NodeRegistry,
    private readonly metrics: MetricsRegistry,
  ) {}

  /** 200 only when the system database answers; 503 otherwise. No authentication. */
  @Public()
  @Get('health')
  async health(@Res({ passthrough: true }) res: Response) {
    const database = (await this.databaseAnswers()) ? 'up' : 'down';
    res.status(database === 'up' ? HttpStatus.OK : HttpStatus.SERVICE_UNAVAILABLE);
    return {
      status: database === 'up' ? 'ok' : 'unavailable',
      roles: this.config.roles,
      database,
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

  private async databaseAnswers(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), DB_PROBE_TIMEOUT_MS);
    });
    const probe = this.db
      .query('SELECT 1')
      .then(() => true)
      .catch(() => false);
    try {
      return await Promise.race([probe, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
