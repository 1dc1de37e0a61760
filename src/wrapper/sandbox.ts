import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { PYTHON_RUNNER } from './runtimes/python-runner';
import { UidPool } from './uid-pool';

/**
 * How user code is confined (ADR 0020, docs/standards/security_model.md):
 * - `isolated`: the wrapper is root. Each task runs as its own uid from a pool, in its own PID,
 *   mount, network, IPC and UTS namespaces.
 * - `userns`: the wrapper is not root but may create user namespaces. The same namespaces, inside
 *   a user namespace; the task keeps the wrapper's uid outside it.
 * - `none`: no namespaces (only the stripped environment and the limits). Chosen explicitly, and
 *   then a wrapper runs user code of one org only.
 */
export type SandboxMode = 'isolated' | 'userns' | 'none';

export interface SandboxSettings {
  /** `auto`: isolated as root, else userns where the kernel allows it, else user code is refused. */
  mode: 'auto' | SandboxMode;
  uidBase: number;
  uidCount: number;
  /** Where uid leases are kept, shared by every wrapper on the host. */
  leaseDir: string;
  /** RLIMIT_AS of the user-code process (virtual memory). */
  memoryBytes: number;
  /** Size of the task's private /tmp (and /dev/shm). */
  tmpBytes: number;
  maxProcesses: number;
  maxOpenFiles: number;
  /** RLIMIT_FSIZE: the largest file the task may write. */
  maxFileBytes: number;
  /** Directories the task must not see (data directory, object store, scratch): each gets an empty read-only tmpfs over it. */
  hiddenPaths: string[];
}

export interface SandboxSpec {
  language: 'typescript' | 'javascript' | 'python' | 'rust';
  /** `path` or `path#export`, relative to the code root. */
  entryPoint: string;
  codeRoot: string;
  /** The slot's env plus its secret_env values: all the process ever sees. */
  env: Record<string, string>;
  /** RLIMIT_CPU in seconds (the job's timeout). */
  cpuSeconds: number;
}

export interface SandboxedProcess {
  child: ChildProcess;
  /** The uid the code runs as (outside any user namespace). */
  uid: number;
  /** Gives the task's uid back to the pool once the process has exited. */
  release(): Promise<void>;
}

/** Thrown when user code cannot be started here; the task fails with this message. */
export class SandboxUnavailable extends Error {}

const SAFE_PATH = '/usr/local/bin:/usr/bin:/bin';

/** Where every wrapper on the host leases its tasks' uids (root only; a tmpfs, empty after a reboot). */
export const SANDBOX_LEASE_DIR = '/run/trace-sandbox/uids';

/**
 * Runs inside the new mount namespace, as root of its namespaces, before the code: every mount
 * is made read-only (keeping the flags a user namespace may not drop), the task gets its own
 * /tmp, /var/tmp and /dev/shm, what the task runs from (its code root, the runtime, the runners)
 * stays visible and read-only even where it lies under one of those — bound back from the shell's
 * descriptor of it, which mount must not canonicalize into the new, empty directory — and the
 * hidden directories are covered by empty read-only mounts.
 * Fails closed: a mount that cannot be made read-only stops the task.
 * Arguments: tmp size, the number of kept paths, the kept paths, the number of hidden paths, the
 * hidden paths, then the command.
 */
const SETUP_SCRIPT = `set -eu
tmp_size=$1; k=$2; shift 2
i=0
while [ "$i" -lt "$k" ]; do
  eval "keep_$i=\\$1"; eval "exec $((i + 3))<\\"\\$1\\""; shift; i=$((i + 1))
done
n=$1; shift
while read -r _ _ _ _ mp opts _; do
  mp=$(printf '%b' "$mp"); flags=''
  IFS=,; for o in $opts; do case $o in nosuid|nodev|noexec|relatime|noatime|nodiratime|strictatime) flags="$flags,$o";; esac; done; unset IFS
  mount -o "remount,bind,ro$flags" "$mp" 2>/dev/null || { echo "sandbox: cannot make $mp read-only" >&2; exit 126; }
done < /proc/self/mountinfo
for d in /tmp /var/tmp /dev/shm; do
  if [ -d "$d" ]; then mount -t tmpfs -o "mode=1777,nosuid,nodev,size=$tmp_size" tmpfs "$d"; fi
done
i=0
while [ "$i" -lt "$k" ]; do
  eval "p=\\$keep_$i"; fd=$((i + 3))
  if [ ! -e "$p" ]; then
    if [ -d "/proc/$$/fd/$fd" ]; then mkdir -p "$p"; else mkdir -p "\${p%/*}"; : > "$p"; fi
    mount --no-canonicalize --bind "/proc/$$/fd/$fd" "$p"; mount -o remount,bind,ro,nosuid,nodev "$p"
  fi
  eval "exec $fd<&-"; i=$((i + 1))
done
while [ "$n" -gt 0 ]; do
  if [ -d "$1" ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec,mode=000,size=4k tmpfs "$1"; fi
  shift; n=$((n - 1))
done
unset PWD OLDPWD
exec "$@"`;

/** Can this process create the namespaces a mode needs? Asked once, at start-up. */
function canUnshare(userns: boolean): boolean {
  const args = [...(userns ? ['--user', '--map-root-user'] : []), '--mount', '--pid', '--fork', '--net', '--ipc', '--uts', '--', 'true'];
  const r = spawnSync('unshare', args, { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0;
}

export class Sandbox {
  readonly mode: SandboxMode | 'unavailable';
  private readonly uids?: UidPool;
  private readonly hidden: string[];

  constructor(private readonly settings: SandboxSettings) {
    const root = process.getuid?.() === 0;
    this.mode = Sandbox.resolveMode(settings.mode, root);
    if (this.mode === 'isolated') this.uids = new UidPool(settings.uidBase, settings.uidCount, settings.leaseDir);
    // The wrapper's own home holds nothing user code may read either (its npm cache, keys, …).
    this.hidden = [...new Set([...settings.hiddenPaths, homedir(), settings.leaseDir].filter((p) => p && p !== '/'))];
  }

  private static resolveMode(requested: SandboxSettings['mode'], root: boolean): SandboxMode | 'unavailable' {
    if (requested === 'none') return 'none';
    if (requested === 'isolated') {
      if (!root) throw new Error('TRACE_SANDBOX=isolated needs the wrapper to run as root (it gives each task its own uid)');
      if (!canUnshare(false)) throw new Error('TRACE_SANDBOX=isolated: this process may not create namespaces (unshare failed; a container needs CAP_SYS_ADMIN)');
      return 'isolated';
    }
    if (requested === 'userns') {
      if (!canUnshare(true)) throw new Error('TRACE_SANDBOX=userns: user namespaces are not available to this process (unshare --user failed)');
      return 'userns';
    }
    if (root && canUnshare(false)) return 'isolated';
    if (canUnshare(true)) return 'userns';
    return 'unavailable';
  }

  async spawn(spec: SandboxSpec): Promise<SandboxedProcess> {
    if (this.mode === 'unavailable') {
      throw new SandboxUnavailable(
        'this wrapper cannot sandbox user code: it is not root and may not create user namespaces (TRACE_SANDBOX=none runs one org\'s code without namespaces; see docs/standards/security_model.md)',
      );
    }
    const [file, exportName] = spec.entryPoint.split('#') as [string, string | undefined];
    const path = resolveInside(spec.codeRoot, file);
    let runtime: string[];
    switch (spec.language) {
      case 'javascript':
      case 'typescript':
        runtime = [realpathSync(process.execPath), join(realpathSync(join(__dirname, 'runtimes')), 'js-runner.js'), path, ...(exportName ? [exportName] : [])];
        break;
      case 'python':
        // -I: no user site directory, no PYTHON* variables, no script directory on sys.path.
        runtime = ['python3', '-I', '-c', PYTHON_RUNNER, path, ...(exportName ? [exportName] : [])];
        break;
      case 'rust':
        runtime = [path]; // a compiled binary that speaks the protocol itself
        break;
    }
    const s = this.settings;
    const limits = [
      'prlimit',
      `--as=${s.memoryBytes}`,
      `--nofile=${s.maxOpenFiles}`,
      `--nproc=${s.maxProcesses}`,
      `--fsize=${s.maxFileBytes}`,
      `--cpu=${Math.max(1, Math.ceil(spec.cpuSeconds))}`,
      '--core=0',
      '--',
    ];
    const env = { PATH: SAFE_PATH, LANG: 'C.UTF-8', HOME: '/tmp', TMPDIR: '/tmp', ...spec.env };
    if (this.mode === 'none') {
      const child = spawn(limits[0]!, [...limits.slice(1), ...runtime], { env, cwd: '/', stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      return { child, uid: process.getuid?.() ?? -1, release: async () => killGroup(child) };
    }
    const uid = this.uids ? await this.uids.acquire() : (process.getuid?.() ?? -1);
    const drop =
      this.mode === 'isolated'
        ? ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--no-new-privs', '--inh-caps=-all', '--bounding-set=-all', '--']
        : ['setpriv', '--no-new-privs', '--inh-caps=-all', '--bounding-set=-all', '--'];
    const namespaces = [
      ...(this.mode === 'userns' ? ['--user', '--map-root-user'] : []),
      '--mount',
      '--propagation',
      'private',
      '--pid',
      '--fork',
      '--kill-child=SIGKILL',
      '--mount-proc',
      '--net',
      '--ipc',
      '--uts',
      '--',
    ];
    // What the task runs from stays visible and is never covered: its code, the runtime, the runners.
    const keep = [...new Set([realpathSync(spec.codeRoot), realpathSync(process.execPath), realpathSync(join(__dirname, 'runtimes'))])];
    const hidden = this.hidden.filter((h) => !keep.some((k) => k === h || k.startsWith(`${h}/`)));
    const args = [...namespaces, '/bin/sh', '-c', SETUP_SCRIPT, 'sandbox', String(s.tmpBytes), String(keep.length), ...keep, String(hidden.length), ...hidden, ...drop, ...limits, ...runtime];
    let child: ChildProcess;
    try {
      child = spawn('unshare', args, { env, cwd: '/', stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      await this.uids?.release(uid);
      throw err;
    }
    return {
      child,
      uid,
      release: async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
        }
        await this.uids?.release(uid);
      },
    };
  }
}

/** Without namespaces the code's process group is its only boundary: whatever it left running goes too. */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** `file` must name something inside `root` (after resolving symlinks): no `..`, no absolute escapes. */
export function resolveInside(root: string, file: string): string {
  const realRoot = realpathSync(root);
  let target: string;
  try {
    target = realpathSync(resolve(realRoot, file));
  } catch {
    throw new Error(`entry point ${JSON.stringify(file)} does not exist under the code root`);
  }
  const rel = relative(realRoot, target);
  if (rel.startsWith('..') || isAbsolute(rel)) throw new Error(`entry point ${JSON.stringify(file)} leaves the code root`);
  return target;
}
