import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, realpathSync } from 'node:fs';
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

/** A program's absolute path on SAFE_PATH: privileged steps are never found through a PATH the task could set. */
function tool(name: string): string {
  for (const dir of SAFE_PATH.split(':')) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  throw new Error(`the sandbox needs ${name} on ${SAFE_PATH}`);
}

/** Where every wrapper on the host leases its tasks' uids (root only; a tmpfs, empty after a reboot). */
export const SANDBOX_LEASE_DIR = '/run/trace-sandbox/uids';

/**
 * Runs inside the new mount namespace, as root of its namespaces, before the code, with an
 * environment of its own (PATH and LANG only: nothing the task's slot sets reaches a privileged
 * step). It makes every mount read-only (keeping the flags a user namespace may not drop), gives
 * the task its own /tmp, /var/tmp, /dev/shm and pseudo-terminals, covers the hidden directories
 * with empty mounts, and binds back what the task runs from (code root, runtime, runners) where a
 * cover or a private /tmp hid it — from descriptors opened before, which mount must not
 * canonicalize into the new, empty directory. Last, it reads the task's environment from fd 3
 * into the `env -i` of the final command, after every privileged step (ADR 0020).
 * Fails closed: a mount that cannot be made read-only stops the task.
 * Arguments: tmp size, the number of kept paths, the kept paths, the number of hidden paths, the
 * hidden paths, then the command, whose `__TRACE_ENV__` marks where the environment goes.
 */
const SETUP_SCRIPT = `set -eu
tmp_size=$1; k=$2; shift 2
i=0
while [ "$i" -lt "$k" ]; do
  eval "keep_$i=\\$1"; eval "exec $((i + 4))<\\"\\$1\\""; shift; i=$((i + 1))
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
if [ -d /dev/pts ]; then
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,max=16 devpts /dev/pts
  mount --bind /dev/pts/ptmx /dev/ptmx
fi
covers=''; j=0
while [ "$j" -lt "$n" ]; do
  eval "h=\\$1"; shift; j=$((j + 1))
  if [ -d "$h" ]; then mount -t tmpfs -o nosuid,nodev,noexec,mode=0711,size=64k tmpfs "$h"; covers="$covers $j"; eval "cover_$j=\\$h"; fi
done
i=0
while [ "$i" -lt "$k" ]; do
  eval "p=\\$keep_$i"; fd=$((i + 4))
  if [ ! -e "$p" ]; then
    if [ -d "/proc/$$/fd/$fd" ]; then mkdir -p "$p"; else mkdir -p "\${p%/*}"; : > "$p"; fi
    mount --no-canonicalize --bind "/proc/$$/fd/$fd" "$p"; mount -o remount,bind,ro,nosuid,nodev "$p"
  fi
  eval "exec $fd<&-"; i=$((i + 1))
done
for j in $covers; do eval "h=\\$cover_$j"; mount -o remount,bind,ro,nosuid,nodev,noexec "$h"; done
for a in "$@"; do
  shift
  if [ "$a" = __TRACE_ENV__ ]; then
    while IFS= read -r line <&3; do
      v=$(printf '%s' "\${line#*=}" | base64 -d; printf x); set -- "$@" "\${line%%=*}=\${v%x}"
    done
  else
    set -- "$@" "$a"
  fi
done
exec 3<&-
unset PWD OLDPWD
exec "$@"`;

/** Can this process create the namespaces a mode needs? Asked once, at start-up. */
function canUnshare(userns: boolean): boolean {
  const args = [...(userns ? ['--user', '--map-root-user'] : []), '--mount', '--pid', '--fork', '--net', '--ipc', '--uts', '--', tool('true')];
  const r = spawnSync(tool('unshare'), args, { stdio: 'ignore', timeout: 10_000, env: { PATH: SAFE_PATH } });
  return r.status === 0;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class Sandbox {
  readonly mode: SandboxMode | 'unavailable';
  /**
   * Whether this wrapper may run only one org's user code: without namespaces, or in a user
   * namespace that keeps the wrapper's supplementary groups (a user namespace cannot drop them, and
   * a group such as `docker` would open other tenants' data).
   */
  readonly singleTenant: boolean;
  private readonly uids?: UidPool;
  private readonly hidden: string[];
  private readonly tools: Record<'unshare' | 'setpriv' | 'prlimit' | 'env' | 'sh' | 'python3', string>;

  constructor(private readonly settings: SandboxSettings) {
    const root = process.getuid?.() === 0;
    this.mode = Sandbox.resolveMode(settings.mode, root);
    const groups = (process.getgroups?.() ?? []).filter((g) => g !== process.getegid?.());
    this.singleTenant = this.mode === 'none' || (this.mode === 'userns' && groups.length > 0);
    if (this.mode === 'isolated') this.uids = new UidPool(settings.uidBase, settings.uidCount, settings.leaseDir);
    // The wrapper's own home holds nothing user code may read either (its npm cache, keys, …).
    this.hidden = [...new Set([...settings.hiddenPaths, homedir(), settings.leaseDir].filter((p) => p && p !== '/'))];
    const optional = (name: string) => {
      try {
        return tool(name);
      } catch {
        return name; // only needed by Python tasks: they fail with the reason if it is missing
      }
    };
    this.tools = { unshare: tool('unshare'), setpriv: tool('setpriv'), prlimit: tool('prlimit'), env: tool('env'), sh: tool('sh'), python3: optional('python3') };
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
    const t = this.tools;
    let runtime: string[];
    switch (spec.language) {
      case 'javascript':
      case 'typescript':
        runtime = [realpathSync(process.execPath), join(realpathSync(join(__dirname, 'runtimes')), 'js-runner.js'), path, ...(exportName ? [exportName] : [])];
        break;
      case 'python':
        // -I: no user site directory, no PYTHON* variables, no script directory on sys.path.
        runtime = [t.python3, '-I', '-c', PYTHON_RUNNER, path, ...(exportName ? [exportName] : [])];
        break;
      case 'rust':
        runtime = [path]; // a compiled binary that speaks the protocol itself
        break;
    }
    const s = this.settings;
    const limits = [
      t.prlimit,
      `--as=${s.memoryBytes}`,
      `--nofile=${s.maxOpenFiles}`,
      `--nproc=${s.maxProcesses}`,
      `--fsize=${s.maxFileBytes}`,
      `--cpu=${Math.max(1, Math.ceil(spec.cpuSeconds))}`,
      '--core=0',
      '--',
    ];
    const env: Record<string, string> = { PATH: SAFE_PATH, LANG: 'C.UTF-8', HOME: '/tmp', TMPDIR: '/tmp', ...spec.env };
    const bad = Object.keys(env).find((k) => !ENV_NAME.test(k));
    if (bad !== undefined) throw new Error(`environment variable name ${JSON.stringify(bad)} is not allowed (letters, digits and _)`);
    if (this.mode === 'none') {
      // Nothing privileged runs here: the limits' own step is the code's, as the wrapper's user.
      const child = spawn(limits[0]!, [...limits.slice(1), ...runtime], { env, cwd: '/', stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      return { child, uid: process.getuid?.() ?? -1, release: async () => killGroup(child) };
    }
    const uid = this.uids ? await this.uids.acquire() : (process.getuid?.() ?? -1);
    // --pdeathsig: changing uid clears a parent-death signal, so it is set again after the change;
    // the code (pid 1 of its namespace) then dies with the unshare that holds it, and all it started with it.
    const drop =
      this.mode === 'isolated'
        ? [t.setpriv, `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--no-new-privs', '--inh-caps=-all', '--bounding-set=-all', '--pdeathsig=KILL', '--']
        : [t.setpriv, '--no-new-privs', '--inh-caps=-all', '--bounding-set=-all', '--pdeathsig=KILL', '--'];
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
    // What the task runs from stays visible (bound back, read-only, where a cover or /tmp hides it).
    const keep = [...new Set([realpathSync(spec.codeRoot), realpathSync(process.execPath), realpathSync(join(__dirname, 'runtimes'))])];
    const args = [
      // unshare itself dies with the wrapper, and so, through --kill-child, does the task.
      '--pdeathsig=KILL',
      '--',
      t.unshare,
      ...namespaces,
      t.sh,
      '-c',
      SETUP_SCRIPT,
      'sandbox',
      String(s.tmpBytes),
      String(keep.length),
      ...keep,
      String(this.hidden.length),
      ...this.hidden,
      ...drop,
      ...limits,
      t.env,
      '-i',
      '__TRACE_ENV__',
      ...runtime,
    ];
    let child: ChildProcess;
    try {
      // Its own session (no controlling terminal to inject keystrokes into), and an environment of
      // our own: the task's variables reach only its last exec, through fd 3.
      child = spawn(t.setpriv, args, { env: { PATH: SAFE_PATH, LANG: 'C.UTF-8' }, cwd: '/', stdio: ['pipe', 'pipe', 'pipe', 'pipe'], detached: true });
    } catch (err) {
      await this.uids?.release(uid);
      throw err;
    }
    const envPipe = child.stdio[3] as NodeJS.WritableStream;
    envPipe.on('error', () => undefined); // a process that died before reading it
    envPipe.end(Object.entries(env).map(([k, v]) => `${k}=${Buffer.from(v).toString('base64')}\n`).join(''));
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
