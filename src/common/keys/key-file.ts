import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A platform secret kept in the data directory when no value is configured: generated once
 * (mode 0600) and read back on later starts, so an all-in-one install needs no setup. Production
 * sets the value explicitly, because processes on other machines do not share the directory.
 * Returns the secret and whether it was just created.
 */
export function loadOrCreateKeyFile(dataDir: string, name: string, bytes: number): { value: string; created: boolean } {
  const file = join(dataDir, name);
  if (existsSync(file)) return { value: readFileSync(file, 'utf8').trim(), created: false };
  mkdirSync(dataDir, { recursive: true });
  const value = randomBytes(bytes).toString('base64');
  try {
    writeFileSync(file, value + '\n', { mode: 0o600, flag: 'wx' });
    return { value, created: true };
  } catch (err) {
    // Another process of the same install created it first: use theirs.
    if ((err as { code?: string }).code === 'EEXIST') return { value: readFileSync(file, 'utf8').trim(), created: false };
    throw err;
  }
}
