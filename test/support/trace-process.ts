import { ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function freshDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'trace-data-'));
  chmodSync(dir, 0o755); // the embedded Postgres user must be able to enter it
  return dir;
}

const MAIN = join(__dirname, '..', '..', 'dist', 'src', 'main.js');

export interface TraceProcess {
  child: ChildProcess;
  port: number;
  baseUrl: string;
  /** Every stdout line parsed as JSON (non-JSON lines are kept as {raw}). */
  logs: Record<string, unknown>[];
  stderr: () => string;
  /** Sends the signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

export interface StartOptions {
  args?: string[];
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  /** Runs the binary as this uid (and gid), for what differs when the platform is not root; the caller is root. */
  asUser?: number;
}

/**
 * Starts the built binary (`node dist/src/main.js`) as a user would, on a free port, and waits
 * for its "listening" log line. Rejects with its output if it exits first.
 */
export function startTrace(options: StartOptions = {}): Promise<TraceProcess> {
  const run = runTrace(options);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      run.child.kill('SIGKILL');
      reject(new Error(`trace did not start in time:\n${run.output()}`));
    }, options.timeoutMs ?? 60_000);
    run.onLog = (entry) => {
      if (entry.msg === 'listening' && typeof entry.port === 'number') {
        clearTimeout(timer);
        const port = entry.port;
        resolve({
          child: run.child,
          port,
          baseUrl: `http://127.0.0.1:${port}`,
          logs: run.logs,
          stderr: () => run.stderrText,
          exited: run.exited,
          stop: async (signal = 'SIGTERM') => {
            if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill(signal);
            return run.exited;
          },
        });
      }
    };
    void run.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`trace exited with ${code} before listening:\n${run.output()}`));
    });
  });
}

/** Runs the binary to completion (for commands expected to exit, like a bad --role). */
export async function runTraceToExit(options: StartOptions = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const run = runTrace(options);
  const code = await run.exited;
  return { code, stdout: run.stdoutText, stderr: run.stderrText };
}

interface Run {
  child: ChildProcess;
  logs: Record<string, unknown>[];
  stdoutText: string;
  stderrText: string;
  exited: Promise<number | null>;
  onLog?: (entry: Record<string, unknown>) => void;
  output(): string;
}

function runTrace(options: StartOptions): Run {
  const [command, prefix] =
    options.asUser === undefined ? [process.execPath, []] : ['setpriv', [`--reuid=${options.asUser}`, `--regid=${options.asUser}`, '--clear-groups', '--', process.execPath]];
  const child = spawn(command, [...prefix, MAIN, ...(options.args ?? [])], {
    // Each process gets its own data directory (dev token, key files) unless the test names one.
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: '0', HOST: '127.0.0.1', TRACE_HEARTBEAT_INTERVAL_MS: '500', TRACE_DATA_DIR: freshDataDir(), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // A test that fails half-way must not leave servers behind.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  child.once('exit', () => process.removeListener('exit', reap));
  const run: Run = {
    child,
    logs: [],
    stdoutText: '',
    stderrText: '',
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null)))),
    output: () => `${run.stdoutText}\n${run.stderrText}`,
  };
  let pending = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    run.stdoutText += chunk.toString();
    pending += chunk.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        entry = { raw: line };
      }
      run.logs.push(entry);
      run.onLog?.(entry);
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => (run.stderrText += chunk.toString()));
  return run;
}
