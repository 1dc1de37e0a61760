import { hash, randomBytes } from 'node:crypto';

export const ATTEMPT_TOKEN_PREFIX = 'tra_';

const SECRET_BYTES = 32;
/** task id (16 bytes) · attempt (4 bytes, big-endian) · secret (32 bytes), base64url after the prefix. */
const TOKEN_BYTES = 16 + 4 + SECRET_BYTES;
const TOKEN_LENGTH = ATTEMPT_TOKEN_PREFIX.length + Math.ceil((TOKEN_BYTES * 4) / 3);

/** The attempt a token names, and the hash its secret must match (the only part of it stored). */
export interface AttemptKey {
  taskId: string;
  attempt: number;
  hash: Buffer;
}

/**
 * Fresh secrets for `n` attempt tokens, and their hashes, which are what the database keeps
 * (`task_attempts.token_hash`). The secrets are drawn before the attempts they will be bound to
 * are known; attemptToken() names the attempt once they are.
 */
export function attemptSecrets(n: number): { secrets: Buffer[]; hashes: Buffer[] } {
  const random = randomBytes(SECRET_BYTES * n);
  const secrets = Array.from({ length: n }, (_, i) => random.subarray(SECRET_BYTES * i, SECRET_BYTES * (i + 1)));
  return { secrets, hashes: secrets.map(secretHash) };
}

/**
 * An attempt token names its attempt, so a call is checked against the attempt's own row (its
 * primary key) and no index of token hashes is kept: 32 random bytes of secret, of which only
 * the SHA-256 is stored.
 */
export function attemptToken(taskId: string, attempt: number, secret: Buffer): string {
  const bytes = Buffer.alloc(TOKEN_BYTES);
  bytes.write(taskId.replace(/-/g, ''), 0, 16, 'hex');
  bytes.writeUInt32BE(attempt, 16);
  secret.copy(bytes, 20);
  return ATTEMPT_TOKEN_PREFIX + bytes.toString('base64url');
}

/** The attempt a token names and its secret's hash; undefined when it is not an attempt token of this form. */
export function parseAttemptToken(token: string): AttemptKey | undefined {
  if (token.length !== TOKEN_LENGTH || !token.startsWith(ATTEMPT_TOKEN_PREFIX)) return undefined;
  const body = token.slice(ATTEMPT_TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body)) return undefined;
  const bytes = Buffer.from(body, 'base64url');
  if (bytes.length !== TOKEN_BYTES) return undefined;
  const hex = bytes.toString('hex', 0, 16);
  const taskId = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return { taskId, attempt: bytes.readUInt32BE(16), hash: secretHash(bytes.subarray(20)) };
}

function secretHash(secret: Buffer): Buffer {
  return hash('sha256', secret, 'buffer');
}
