import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { sql, sqlOne } from '../../common/db';
import { SecretCipher } from '../../common/keys/secret-cipher';

export interface SecretView {
  name: string;
  created_at: Date;
  updated_at: Date;
  updated_by: string;
}

/** Write-only secrets: values go in, only names and timestamps ever come out. */
@Injectable()
export class SecretsService {
  constructor(
    private readonly db: DataSource,
    private readonly cipher: SecretCipher,
  ) {}

  async put(orgId: string, name: string, value: string, userId: string): Promise<{ secret: SecretView; created: boolean }> {
    const sealed = this.cipher.seal(value, `${orgId}/${name}`);
    const row = await sqlOne<SecretView & { created: boolean }>(
      this.db,
      `INSERT INTO secrets (org_id, name, ciphertext, iv, auth_tag, key_id, updated_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (org_id, name) DO UPDATE
         SET ciphertext = EXCLUDED.ciphertext, iv = EXCLUDED.iv, auth_tag = EXCLUDED.auth_tag,
             key_id = EXCLUDED.key_id, updated_by = EXCLUDED.updated_by, updated_at = now()
       RETURNING name, created_at, updated_at, updated_by, (xmax = 0) AS created`,
      [orgId, name, sealed.ciphertext, sealed.iv, sealed.authTag, sealed.keyId, userId],
    );
    const { created, ...secret } = row!;
    return { secret, created };
  }

  list(orgId: string): Promise<SecretView[]> {
    return sql<SecretView>(this.db, `SELECT name, created_at, updated_at, updated_by FROM secrets WHERE org_id = $1 ORDER BY name`, [orgId]);
  }

  async delete(orgId: string, name: string): Promise<boolean> {
    return (await sql(this.db, `DELETE FROM secrets WHERE org_id = $1 AND name = $2 RETURNING name`, [orgId, name])).length > 0;
  }

  /** The names among `names` that the org has no secret for. */
  async missing(orgId: string, names: string[]): Promise<Set<string>> {
    if (names.length === 0) return new Set();
    const found = await sql<{ name: string }>(this.db, `SELECT name FROM secrets WHERE org_id = $1 AND name = ANY ($2)`, [orgId, names]);
    const have = new Set(found.map((r) => r.name));
    return new Set(names.filter((n) => !have.has(n)));
  }
}
