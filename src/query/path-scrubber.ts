import { realpathSync } from 'node:fs';
import { homedir } from 'node:os';

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Takes the server's own directories out of messages that reach a client: DuckDB names the files
 * it could not read or write (`<object store>/org/…/0_249.parquet`), and a client has no business
 * learning where the object store, the scratch or the data directory are on this machine.
 */
export class PathScrubber {
  private readonly rules: { pattern: RegExp; label: string }[];

  /** `roots`: directory → the label it is replaced with; the longest directory wins. */
  constructor(roots: [string, string][]) {
    const expanded = new Map<string, string>();
    for (const [dir, label] of roots) {
      for (const variant of [dir, safeRealpath(dir)]) {
        const d = variant?.replace(/\/+$/, '');
        if (d && d.length > 1 && !expanded.has(d)) expanded.set(d, label);
      }
    }
    this.rules = [...expanded.entries()]
      .sort((a, b) => b[0].length - a[0].length)
      .map(([dir, label]) => ({ pattern: new RegExp(`${escape(dir)}(?=/|$|[^\\w.-])`, 'g'), label }));
  }

  /** The server's directories as given, plus the home directory and the working directory (DuckDB's defaults live there). */
  static forServer(dirs: { objectStore?: string; scratch: string; data: string; other: string[] }): PathScrubber {
    return new PathScrubber([
      ...(dirs.objectStore ? [[dirs.objectStore, '<object store>'] as [string, string]] : []),
      [dirs.scratch, '<scratch>'],
      [dirs.data, '<data dir>'],
      ...[...dirs.other, process.cwd(), homedir()].map((d): [string, string] => [d, '<server path>']),
    ]);
  }

  scrub(message: string): string {
    return this.rules.reduce((m, r) => m.replace(r.pattern, r.label), message);
  }
}

function safeRealpath(dir: string): string | undefined {
  try {
    return realpathSync(dir);
  } catch {
    return undefined;
  }
}
