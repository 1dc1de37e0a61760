import { Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MIGRATIONS_APPLIED } from '../../common/db';
import { JsonLogger } from '../../common/logging/json-logger';
import { TraceConfig } from '../../config';
import { IdentityService } from './identity.service';

export const DEV_TOKEN_FILE = 'dev-token';

/**
 * All-in-one mode: the first start creates org `dev` and its admin. The admin's token is
 * TRACE_DEV_TOKEN when set, otherwise generated, printed once and written to `<data dir>/dev-token`.
 */
@Injectable()
export class DevOrgBootstrap implements OnApplicationBootstrap {
  constructor(
    private readonly config: TraceConfig,
    private readonly identity: IdentityService,
    private readonly logger: JsonLogger,
    @Inject(MIGRATIONS_APPLIED) _schemaReady: unknown,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    if (!this.config.bootstrap.devOrg) return;
    const { created, token } = await this.identity.ensureDevOrg(this.config.bootstrap.devToken);
    if (!token) return;
    const file = join(this.config.dataDir, DEV_TOKEN_FILE);
    await mkdir(this.config.dataDir, { recursive: true });
    await writeFile(file, token + '\n', { mode: 0o600 });
    await chmod(file, 0o600);
    if (this.config.bootstrap.devToken) {
      this.logger.event('info', 'DevOrgBootstrap', created ? 'created org "dev"; its admin uses TRACE_DEV_TOKEN' : 'registered TRACE_DEV_TOKEN for the dev admin', { token_file: file });
    } else {
      // Printed this once, on the start that created it; afterwards it is only in the file.
      this.logger.event('info', 'DevOrgBootstrap', 'created org "dev" with an admin; keep this token', { dev_token: token, token_file: file });
    }
  }
}
