import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { PYTHON_RUNNER } from './runtimes/python-runner';

export interface SandboxSpec {
  language: 'typescript' | 'javascript' | 'python' | 'rust';
  /** `path` or `path#export`, relative to the code root. */
  entryPoint: string;
  codeRoot: string;
  /** The slot's env plus its secret_env values: all the process ever sees. */
  env: Record<string, string>;
  /** OS user to run as when we are root. */
  sandboxUser: string;
}

const SAFE_PATH = '/usr/local/bin:/usr/bin:/bin';

/**
 * Starts user code outside the wrapper's trust (docs/standards/security_model.md):
 * - an environment built from scratch: PATH, LANG, HOME and the slot's variables — never the
 *   wrapper's own environment, so no platform credential or attempt token can leak into it;
 * - when the wrapper is root: a fresh network namespace (no route to /internal/* or anywhere else)
 *   and an unprivileged uid/gid with no_new_privs, so it cannot signal or ptrace the wrapper;
 * - entry points resolved inside the code root only.
 */
export function spawnSandboxed(spec: SandboxSpec): ChildProcess {
  const [file, exportName] = spec.entryPoint.split('#') as [string, string | undefined];
  const path = resolveInside(spec.codeRoot, file);
  let command: string;
  let args: string[];
  switch (spec.language) {
    case 'javascript':
    case 'typescript':
      command = process.execPath;
      args = [join(__dirname, 'runtimes', 'js-runner.js'), path, ...(exportName ? [exportName] : [])];
      break;
    case 'python':
      command = 'python3';
      args = ['-c', PYTHON_RUNNER, path, ...(exportName ? [exportName] : [])];
      break;
    case 'rust':
      command = path; // a compiled binary that speaks the protocol itself
      args = [];
      break;
  }
  const env = { PATH: SAFE_PATH, LANG: 'C.UTF-8', HOME: '/tmp', ...spec.env };
  if (process.getuid?.() === 0) {
    const { uid, gid } = userIds(spec.sandboxUser);
    args = ['--net', '--', 'setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--no-new-privs', '--', command, ...args];
    command = 'unshare';
  }
  return spawn(command, args, { env, cwd: '/', stdio: ['pipe', 'pipe', 'pipe'], detached: false });
}

const ids = new Map<string, { uid: number; gid: number }>();
function userIds(user: string): { uid: number; gid: number } {
  let found = ids.get(user);
  if (!found) {
    found = {
      uid: Number(execFileSync('id', ['-u', user]).toString().trim()),
      gid: Number(execFileSync('id', ['-g', user]).toString().trim()),
    };
    ids.set(user, found);
  }
  return found;
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
