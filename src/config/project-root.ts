import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

let cached: string | undefined;

/** The folder holding package.json and config/, whether running from src (tests) or dist. */
export function projectRoot(): string {
  if (cached) return cached;
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'config'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the project root (package.json beside config/)');
    dir = parent;
  }
  cached = dir;
  return dir;
}
