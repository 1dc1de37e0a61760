import { Injectable } from '@nestjs/common';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { loadOrCreateKeyFile } from './key-file';
import { join } from 'node:path';
import { JsonLogger } from '../logging/json-logger';
import { TraceConfig } from '../../config';

export interface Sealed {
  ciphertext: Buffer;
  iv: Buffer;
  authTag: Buffer;
  keyId: string;
}

const KEY_FILE = 'secrets.key';

/**
 * AES-256-GCM with the key from TRACE_SECRETS_KEY, or — for all-in-one use — a key generated once
 * into the data directory. The key id (a hash prefix) is stored with each secret so a rotated key
 * is detected rather than producing garbage. The org id and secret name are bound as associated data.
 */
@Injectable()
export class SecretCipher {
  private readonly key: Buffer;
  readonly keyId: string;

  constructor(config: TraceConfig, logger: JsonLogger) {
    this.key = config.secretsKey ?? keyFromDataDir(config.dataDir, logger);
    this.keyId = createHash('sha256').update(this.key).digest('hex').slice(0, 16);
  }

  seal(plaintext: string, associated: string): Sealed {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(associated, 'utf8'));
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return { ciphertext, iv, authTag: cipher.getAuthTag(), keyId: this.keyId };
  }

  /** Opened only to build a task payload's slot secret_env (task-fetch, Lambda invoke); no user-facing API returns a value. */
  open(sealed: Sealed, associated: string): string {
    if (sealed.keyId !== this.keyId) throw new Error(`secret was sealed with key ${sealed.keyId}, not the configured key ${this.keyId}`);
    const decipher = createDecipheriv('aes-256-gcm', this.key, sealed.iv);
    decipher.setAAD(Buffer.from(associated, 'utf8'));
    decipher.setAuthTag(sealed.authTag);
    return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]).toString('utf8');
  }
}

function keyFromDataDir(dataDir: string, logger: JsonLogger): Buffer {
  const { value, created } = loadOrCreateKeyFile(dataDir, KEY_FILE, 32);
  const key = Buffer.from(value, 'base64');
  if (key.length !== 32) throw new Error(`${join(dataDir, KEY_FILE)} does not hold a 32-byte base64 key`);
  if (created) logger.event('warn', 'SecretCipher', 'TRACE_SECRETS_KEY is not set; generated a key file for secrets (set TRACE_SECRETS_KEY in production)', { key_file: join(dataDir, KEY_FILE) });
  return key;
}
