import { hash, randomBytes } from 'node:crypto';

/** Every API token starts with this, so leaked tokens are easy to find by secret scanners. */
export const TOKEN_PREFIX = 'trc_';

/** 32 random bytes: enough entropy that a fast hash (not a password hash) is the right store. */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export function hashToken(token: string): Buffer {
  return hash('sha256', token, 'buffer');
}

/** What we keep in clear to help people tell tokens apart: the first few characters. */
export function displayPrefix(token: string): string {
  return token.slice(0, TOKEN_PREFIX.length + 6);
}
