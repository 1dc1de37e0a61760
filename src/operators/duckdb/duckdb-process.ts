import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { sizeInBytes } from '../../config/trace-config';
import type { DuckDbJob, DuckDbReply, DuckDbRows } from './duckdb-process-protocol';

/**
 * Address space a Node process with DuckDB loaded has reserved before it does any work (measured
 * at about 1.3 GB VmSize; V8 and the allocator reserve far more than they touch). The process's
 * RLIMIT_AS is this plus DuckDB's memory limit plus headroom for DuckDB's own overhead.
 */
const RESTING_ADDRESS_SPACE = 1536 * 1024 ** 2;
const HEADROOM = 512 * 1024 ** 2;

/** Thrown when the SQL needed more memory than its limit: the task fails with this message. */
export class DuckDbMemoryLimit extends Error {}

/**
 * Runs one DuckDB job in a child process under an address-space limit (ADR 0020) and answers its
 * rows (for `output: rows`). The child is killed when `signal` aborts (the attempt was canceled,
 * superseded or passed its deadline). Every failure rejects with DuckDB's first line, or a
 * `DuckDbMemoryLimit` naming the limit.
 */
export function runDuckDbJob(job: DuckDbJob, signal: AbortSignal, what: string): Promise<DuckDbRows | undefined> {
  signal.throwIfAborted();
  const limit = RESTING_ADDRESS_SPACE + sizeInBytes(job.memoryLimit) + HEADROOM;
  const child = spawn('prlimit', [`--as=${limit}:${limit}`, '--core=0', '--', process.execPath, join(__dirname, 'duckdb-worker.js')], {
    env: {},
    cwd: '/',
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'advanced',
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
  return new Promise<DuckDbRows | undefined>((resolve, reject) => {
    let answered = false;
    const abort = () => child.kill('SIGKILL');
    signal.addEventListener('abort', abort, { once: true });
    child.once('error', (err) => {
      answered = true;
      reject(err);
    });
    child.once('message', (reply: DuckDbReply) => {
      answered = true;
      if (reply.kind === 'done') return resolve(reply.rows);
      reject(reply.memory ? new DuckDbMemoryLimit(`${what}: the SQL needed more memory than its limit of ${job.memoryLimit}: ${reply.message}`) : new Error(reply.message));
    });
    child.once('exit', (code, sig) => {
      signal.removeEventListener('abort', abort);
      if (answered) return;
      if (signal.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      // No answer: the process died, most likely out of memory outside DuckDB's own accounting.
      const tail = stderr.trim().split('\n').slice(-1)[0] ?? '';
      reject(new DuckDbMemoryLimit(`${what}: the SQL's process ended with ${sig ?? code} before answering (memory limit ${job.memoryLimit})${tail ? `: ${tail.slice(0, 500)}` : ''}`));
    });
    child.send(job);
  });
}
