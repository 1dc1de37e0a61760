import { chmodSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server, type Socket, connect as connectSocket, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { createTestDatabase, SHARED_PG_SOCKET_ENV } from '../support/shared-postgres';
import { startTrace, type TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

/** A data directory the embedded Postgres user can enter. */
function dataDirectory(): string {
  const dir = mkdtempSync(join(tmpdir(), 'trace-supervision-'));
  chmodSync(dir, 0o755);
  return dir;
}

/** The running postmaster's pid: the first line of `postmaster.pid` in the cluster directory. */
function postmasterPid(dataDir: string): number {
  return Number(readFileSync(join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** No server runs on the data directory: no lock file, or only a killed server's stale one. */
function noServerRunning(dataDir: string): boolean {
  return !existsSync(join(dataDir, 'pg', 'postmaster.pid')) || !alive(postmasterPid(dataDir));
}

const logged = (p: TraceProcess, msg: string, from = 0) => p.logs.slice(from).find((l) => l.msg === msg);

/** The exit code, or 'still running' after `ms`. */
async function exitCodeWithin(p: TraceProcess, ms: number): Promise<number | null | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), ms)));
  try {
    return await Promise.race([p.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** /health answered quickly (not a hang), and how long it took. */
async function timedHealth(baseUrl: string) {
  const started = Date.now();
  const res = await call(baseUrl, 'GET', '/health');
  return { ...res, ms: Date.now() - started };
}

/** Kills the postmaster with `signal` and waits for the exit to be logged; returns the log entry and how long that took. */
async function killPostmaster(p: TraceProcess, dataDir: string, signal: NodeJS.Signals) {
  const pid = postmasterPid(dataDir);
  const from = p.logs.length;
  const killedAt = Date.now();
  process.kill(pid, signal);
  const entry = await waitFor(() => logged(p, 'embedded Postgres exited unexpectedly', from), 'the exit to be logged', 5_000);
  return { pid, from, entry, noticedMs: Date.now() - killedAt };
}

describe('embedded Postgres supervision', () => {
  it('a killed postmaster is logged at once, answered as 503 while down, and restarted with its data', async () => {
    const dataDir = dataDirectory();
    const p = await startTrace({ env: { TRACE_DATA_DIR: dataDir, DATABASE_URL: undefined } });
    const token = p.logs.find((l) => typeof l.dev_token === 'string')!.dev_token as string;
    try {
      expect((await call(p.baseUrl, 'GET', '/v1/me', { token })).status).toBe(200);

      const { pid, from, entry, noticedMs } = await killPostmaster(p, dataDir, 'SIGKILL');
      expect(entry).toMatchObject({ level: 'error', context: 'EmbeddedPostgres', pid, signal: 'SIGKILL', exit_code: null, action: 'restart' });
      expect(noticedMs).toBeLessThan(5_000);

      // Down: both answer at once, with what is wrong, and nothing is a 500.
      const health = await timedHealth(p.baseUrl);
      expect(health.status).toBe(503);
      expect(health.body).toMatchObject({ status: 'unavailable', database: 'down', database_reason: 'unreachable' });
      expect(health.ms).toBeLessThan(2_500);
      const me = await call(p.baseUrl, 'GET', '/v1/me', { token });
      expect(me.status).toBe(503);
      expect(me.body).toEqual({ error: { code: 'database_unavailable', message: 'the system database is unavailable; try again shortly' } });
      expect(logged(p, 'embedded Postgres restarted', from)).toBeUndefined(); // the answers above were given while it was down

      const restarted = await waitFor(() => logged(p, 'embedded Postgres restarted', from), 'the restart', 15_000);
      expect(restarted.pid).not.toBe(pid);
      expect(postmasterPid(dataDir)).toBe(restarted.pid);
      await waitFor(async () => (await call(p.baseUrl, 'GET', '/health')).status === 200, 'health to recover', 5_000);
      const again = await call(p.baseUrl, 'GET', '/v1/me', { token });
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ org: 'dev', email: 'admin@dev.local' });
      console.log(`SIGKILL: noticed in ${noticedMs} ms, /health 503 in ${health.ms} ms, back after ${String(restarted.down_ms)} ms`);
    } finally {
      expect(await p.stop('SIGTERM')).toBe(0);
    }
    expect(existsSync(join(dataDir, 'pg', 'postmaster.pid'))).toBe(false); // the restarted server stopped with us
  });

  it('a postmaster that keeps dying is given up on: the process exits 1 and leaves no server behind', async () => {
    const dataDir = dataDirectory();
    const p = await startTrace({ env: { TRACE_DATA_DIR: dataDir, DATABASE_URL: undefined } });
    try {
      // Three deaths within the window are restarted (SIGQUIT: an immediate shutdown)...
      for (let death = 1; death <= 3; death++) {
        const { entry, from, noticedMs } = await killPostmaster(p, dataDir, 'SIGQUIT');
        expect(entry).toMatchObject({ signal: null, action: 'restart' });
        expect(typeof entry.exit_code).toBe('number');
        expect(noticedMs).toBeLessThan(5_000);
        await waitFor(() => logged(p, 'embedded Postgres restarted', from), `restart ${death}`, 15_000);
      }
      // ...the fourth is not.
      const { entry, noticedMs } = await killPostmaster(p, dataDir, 'SIGQUIT');
      expect(entry.action).toBe('give up');
      const noticedAt = Date.now();
      expect(await exitCodeWithin(p, 10_000)).toBe(1);
      const exitMs = Date.now() - noticedAt + noticedMs;
      expect(logged(p, 'not restarting the embedded Postgres')).toMatchObject({ level: 'error', reason: expect.stringContaining('4 times within 10 minutes') });
      expect(logged(p, 'draining')).toMatchObject({ reason: expect.stringContaining('embedded Postgres died') });
      expect(noServerRunning(dataDir)).toBe(true);
      console.log(`give up: exited 1 ${exitMs} ms after the fourth kill`);
    } finally {
      await p.stop('SIGKILL');
    }
  });

  it('a drain while the server is down stops the restart: exit 0, no server left running', async () => {
    const dataDir = dataDirectory();
    const p = await startTrace({ env: { TRACE_DATA_DIR: dataDir, DATABASE_URL: undefined } });
    const { pid, from } = await killPostmaster(p, dataDir, 'SIGKILL');
    expect(await p.stop('SIGTERM')).toBe(0);
    expect(logged(p, 'embedded Postgres restarted', from)).toBeUndefined();
    expect(alive(pid)).toBe(false);
    expect(noServerRunning(dataDir)).toBe(true); // at most the killed server's lock file, which the next start clears
  });

  it('an external database unreachable past TRACE_DATABASE_LOST_EXIT_MS is logged at once and the process exits 1', async () => {
    // The "server": a TCP relay to the shared Postgres, closed to make the database go away.
    const databaseUrl = new URL(await createTestDatabase('lost'));
    const relay = await startRelay(join(process.env[SHARED_PG_SOCKET_ENV]!, '.s.PGSQL.5432'));
    const url = `postgresql://trace@127.0.0.1:${relay.port}${databaseUrl.pathname}`;
    const token = 'trc_database-lost-test-token-abcdefgh';
    const p = await startTrace({
      args: ['--role', 'registry'],
      env: { DATABASE_URL: url, TRACE_DATABASE_LOST_EXIT_MS: '3000', TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DEV_TOKEN: token },
    });
    try {
      expect((await call(p.baseUrl, 'GET', '/v1/me', { token })).status).toBe(200);
      const from = p.logs.length;
      const closedAt = Date.now();
      await relay.close();

      const health = await timedHealth(p.baseUrl);
      expect(health.status).toBe(503);
      expect(health.body).toMatchObject({ database: 'down', database_reason: 'unreachable' });
      expect(health.ms).toBeLessThan(2_500);
      const me = await call(p.baseUrl, 'GET', '/v1/me', { token });
      expect(me.status).toBe(503);
      expect(me.body.error.code).toBe('database_unavailable');

      const noticed = await waitFor(() => logged(p, 'system database does not answer', from), 'the outage to be logged', 5_000);
      const noticedMs = Date.now() - closedAt;
      expect(noticed).toMatchObject({ level: 'error', context: 'DatabaseWatchdog', exit_after_ms: 3000 });

      expect(await exitCodeWithin(p, 15_000)).toBe(1);
      const exitMs = Date.now() - closedAt;
      expect(exitMs).toBeGreaterThanOrEqual(3_000);
      expect(logged(p, 'system database lost; exiting', from)).toMatchObject({ level: 'error' });
      console.log(`external: outage logged in ${noticedMs} ms, exited 1 after ${exitMs} ms (limit 3000 ms)`);
    } finally {
      await p.stop('SIGKILL');
      await relay.close();
    }
  });
});

/** A TCP port that forwards to a Unix socket, until closed (which also cuts every connection through it). */
async function startRelay(socketPath: string): Promise<{ port: number; close: () => Promise<void> }> {
  const open = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connectSocket(socketPath);
    for (const s of [client, upstream]) {
      open.add(s);
      s.on('close', () => open.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  return {
    port,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of open) s.destroy();
      })),
  };
}
