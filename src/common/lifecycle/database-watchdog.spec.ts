import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TraceConfig } from '../../config';
import { JsonLogger } from '../logging/json-logger';
import { DatabaseWatchdog } from './database-watchdog';

describe('DatabaseWatchdog', () => {
  // A socket directory with no server in it: every connect fails at once with ENOENT.
  const target = { host: mkdtempSync(join(tmpdir(), 'trace-no-pg-')), port: 5432, user: 'trace', database: 'trace', label: 'nowhere' };

  it('logs the first failure at once and reports the database lost once it has failed for TRACE_DATABASE_LOST_EXIT_MS', async () => {
    const logged: Record<string, unknown>[] = [];
    const logger = new JsonLogger('info', (line) => logged.push(JSON.parse(line) as Record<string, unknown>));
    const watchdog = new DatabaseWatchdog(target, { lifecycle: { databaseLostExitMs: 1500 } } as TraceConfig, logger);
    const started = Date.now();
    const lost = new Promise<string>((resolve) => watchdog.onLost(resolve));
    watchdog.onApplicationBootstrap();
    try {
      const reason = await lost;
      const elapsed = Date.now() - started;
      expect(reason).toContain('TRACE_DATABASE_LOST_EXIT_MS=1500');
      expect(elapsed).toBeGreaterThanOrEqual(1500);
      expect(elapsed).toBeLessThan(4000);
      expect(logged.map((l) => l.msg)).toEqual(['system database does not answer', 'system database lost; exiting']);
      expect(logged[0]).toMatchObject({ level: 'error', database: 'nowhere', exit_after_ms: 1500 });
      expect(String(logged[0]!.error)).toContain('ENOENT');
      expect(watchdog.downSince).toBeInstanceOf(Date);
    } finally {
      await watchdog.beforeApplicationShutdown();
    }
  });

  it('with TRACE_DATABASE_LOST_EXIT_MS=0 logs the failure and never reports the database lost', async () => {
    const logged: string[] = [];
    const watchdog = new DatabaseWatchdog(target, { lifecycle: { databaseLostExitMs: 0 } } as TraceConfig, new JsonLogger('info', (line) => logged.push(line)));
    let lost = false;
    watchdog.onLost(() => (lost = true));
    watchdog.onApplicationBootstrap();
    await new Promise((r) => setTimeout(r, 3500));
    await watchdog.beforeApplicationShutdown();
    expect(lost).toBe(false);
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0]!).msg).toBe('system database does not answer');
  });
});
