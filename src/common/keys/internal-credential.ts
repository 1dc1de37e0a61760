import { Injectable } from '@nestjs/common';
import { timingSafeEqual } from 'node:crypto';
import { TraceConfig } from '../../config';
import { loadOrCreateKeyFile } from './key-file';

/**
 * The credential platform components present on /internal/* (wrappers fetching tasks). It is a
 * platform secret: never in a task payload, never in a user-code process's environment.
 */
@Injectable()
export class InternalCredential {
  readonly token: string;

  constructor(config: TraceConfig) {
    this.token = config.dispatch.internalToken ?? loadOrCreateKeyFile(config.dataDir, 'internal-token', 32).value;
  }

  matches(candidate: string): boolean {
    const a = Buffer.from(candidate);
    const b = Buffer.from(this.token);
    return a.length === b.length && timingSafeEqual(a, b);
  }
}
