import { mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A pool of uids for user code, one per running task (ADR 0020): two tasks never share a uid, so
 * neither can read the other's /proc entries, signal it, trace it or share its process limit.
 * A uid is leased with a file `<dir>/<uid>` created exclusively and holding the wrapper's pid, so
 * every wrapper on the host draws from the same pool without handing out a uid twice; a lease whose
 * wrapper is gone is taken over.
 */
export class UidPool {
  private readonly mine = new Set<number>();
  private next = 0;
  private ready?: Promise<void>;

  constructor(
    private readonly base: number,
    private readonly count: number,
    private readonly dir: string,
  ) {}

  async acquire(): Promise<number> {
    this.ready ??= mkdir(this.dir, { recursive: true, mode: 0o700 }).then(() => undefined);
    await this.ready;
    for (let tried = 0; tried < this.count; tried++) {
      const uid = this.base + ((this.next + tried) % this.count);
      if (this.mine.has(uid)) continue;
      if (await this.lease(uid)) {
        // A process of this uid still running (a task of a wrapper with another lease directory, or
        // one a crash left behind) makes it busy: leave the lease to it and take the next uid.
        if (await runsProcesses(uid)) {
          await unlink(join(this.dir, String(uid))).catch(() => undefined);
          continue;
        }
        this.next = (uid - this.base + 1) % this.count;
        this.mine.add(uid);
        return uid;
      }
    }
    throw new Error(`no sandbox uid is free (TRACE_SANDBOX_UID_COUNT=${this.count} are all running tasks)`);
  }

  async release(uid: number): Promise<void> {
    if (!this.mine.delete(uid)) return;
    await unlink(join(this.dir, String(uid))).catch(() => undefined);
  }

  private async lease(uid: number): Promise<boolean> {
    const path = join(this.dir, String(uid));
    for (let round = 0; round < 2; round++) {
      try {
        const file = await open(path, 'wx', 0o600);
        await file.writeFile(String(process.pid));
        await file.close();
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(holder) && holder > 0 && alive(holder)) return false;
      // The wrapper that held it is gone (its tasks' namespaces died with it): take it over.
      await unlink(path).catch(() => undefined);
    }
    return false;
  }
}

/** Is any process on the host running as `uid`? (Its /proc entry belongs to its uid.) */
async function runsProcesses(uid: number): Promise<boolean> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const owner = await stat(`/proc/${entry}`).then((s) => s.uid, () => undefined);
    if (owner === uid) return true;
  }
  return false;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
