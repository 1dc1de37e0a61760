import type { ConnectionOptions } from 'node:tls';
import { Client } from 'pg';
import type { JsonLogger } from '../logging/json-logger';
import type { DatabaseTarget } from './system-database';

/**
 * One dedicated connection that LISTENs on channels and calls back on NOTIFY. Wake-ups are hints:
 * every loop still polls, so a lost connection only costs latency until it reconnects.
 */
export class PgListener {
  private client?: Client;
  private closed = false;
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly target: DatabaseTarget,
    private readonly channels: string[],
    /** `sender`: the process id of the backend that sent the NOTIFY. */
    private readonly onNotify: (channel: string, payload: string, sender: number) => void,
    private readonly logger: JsonLogger,
  ) {}

  async start(): Promise<void> {
    if (this.closed) return;
    const client = new Client({ host: this.target.host, port: this.target.port, user: this.target.user, password: this.target.password, database: this.target.database, ssl: this.target.ssl as ConnectionOptions | boolean | undefined });
    client.on('notification', (n) => this.onNotify(n.channel, n.payload ?? '', n.processId));
    client.on('error', (err) => {
      this.logger.event('warn', 'PgListener', 'listen connection lost; reconnecting', { error: err.message });
      this.reconnect();
    });
    try {
      await client.connect();
      for (const channel of this.channels) await client.query(`LISTEN ${channel}`);
      this.client = client;
    } catch (err) {
      this.logger.event('warn', 'PgListener', 'cannot listen yet; retrying', { error: (err as Error).message });
      await client.end().catch(() => undefined);
      this.reconnect();
    }
  }

  async stop(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.client?.end().catch(() => undefined);
  }

  private reconnect(): void {
    if (this.closed) return;
    void this.client?.end().catch(() => undefined);
    this.client = undefined;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.start(), 1000);
  }
}
