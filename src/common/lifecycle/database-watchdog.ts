import { BeforeApplicationShutdown, OnApplicationBootstrap } from '@nestjs/common';
import type { ConnectionOptions } from 'node:tls';
import { Client } from 'pg';
import type { TraceConfig } from '../../config';
import type { DatabaseTarget } from '../db/system-database';
import type { JsonLogger } from '../logging/json-logger';

const PROBE_INTERVAL_MS = 1000;
const PROBE_TIMEOUT_MS = 2000;

/**
 * Asks the system database `SELECT 1` every second on a connection of its own (so a busy pool is
 * not taken for a dead server). The first failure is logged at once; recovery is logged with how
 * long it took; past TRACE_DATABASE_LOST_EXIT_MS of failures in a row it tells `onLost`, and the
 * process exits 1 for its supervisor to restart it (ADR 0021).
 */
export class DatabaseWatchdog implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private client?: Client;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private since?: Date;
  private lost = false;
  private readonly listeners: ((reason: string) => void)[] = [];

  constructor(
    private readonly target: DatabaseTarget,
    private readonly config: TraceConfig,
    private readonly logger: JsonLogger,
  ) {}

  /** When the database stopped answering, while it does not. */
  get downSince(): Date | undefined {
    return this.since;
  }

  onLost(listener: (reason: string) => void): void {
    this.listeners.push(listener);
  }

  onApplicationBootstrap(): void {
    this.schedule();
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopped = true; // a drain without a database is not a second reason to exit
    clearTimeout(this.timer);
    await this.drop();
  }

  private schedule(): void {
    if (this.stopped || this.lost) return;
    this.timer = setTimeout(() => void this.tick(), PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      await this.probe();
      this.answered();
    } catch (err) {
      if (this.stopped) return;
      this.failed(err as Error);
      void this.drop();
    }
    this.schedule();
  }

  private async probe(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
    });
    try {
      await Promise.race([this.query(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async query(): Promise<void> {
    if (!this.client) {
      const t = this.target;
      const client = new Client({
        host: t.host,
        port: t.port,
        user: t.user,
        password: t.password,
        database: t.database,
        ssl: t.ssl as ConnectionOptions | boolean | undefined,
        application_name: 'trace-watchdog',
      });
      // A connection that fails between probes is dropped at the next one, whose query fails.
      client.on('error', () => undefined);
      this.client = client;
      await client.connect();
    }
    await this.client.query('SELECT 1');
  }

  /** Closes the connection; a close that hangs (a connect to an unreachable host) is not waited for past a second. */
  private async drop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    let timer: NodeJS.Timeout | undefined;
    const enough = new Promise<void>((resolve) => (timer = setTimeout(resolve, 1000)));
    await Promise.race([client.end().catch(() => undefined), enough]);
    clearTimeout(timer);
  }

  private answered(): void {
    if (!this.since) return;
    this.logger.event('info', 'DatabaseWatchdog', 'system database answers again', { database: this.target.label, down_ms: Date.now() - this.since.getTime() });
    this.since = undefined;
  }

  private failed(err: Error): void {
    const limit = this.config.lifecycle.databaseLostExitMs;
    if (!this.since) {
      this.since = new Date();
      this.logger.event('error', 'DatabaseWatchdog', 'system database does not answer', {
        database: this.target.label,
        error: err.message,
        exit_after_ms: limit || undefined,
      });
      return;
    }
    const downMs = Date.now() - this.since.getTime();
    if (limit === 0 || downMs < limit || this.lost) return;
    this.lost = true;
    const reason = `the system database has not answered for ${downMs} ms (TRACE_DATABASE_LOST_EXIT_MS=${limit})`;
    this.logger.event('error', 'DatabaseWatchdog', 'system database lost; exiting', { database: this.target.label, down_ms: downMs, error: err.message });
    for (const listener of this.listeners) listener(reason);
  }
}
