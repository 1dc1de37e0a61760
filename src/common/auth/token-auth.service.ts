import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { sqlOne } from '../db/sql';
import { hashToken, Principal, TOKEN_PREFIX } from '../identity';

interface TokenRow {
  token_id: string;
  user_id: string;
  email: string;
  platform_admin: boolean;
  org_id: string;
  org_name: string;
  roles: string[];
}

/** Resolves a bearer token to a Principal, or undefined for unknown, revoked and expired tokens. */
@Injectable()
export class TokenAuthService {
  constructor(private readonly db: DataSource) {}

  async authenticate(token: string): Promise<Principal | undefined> {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 512) return undefined;
    const row = await sqlOne<TokenRow>(
      this.db,
      `UPDATE api_tokens t
          SET last_used_at = now()
         FROM users u, orgs o, org_memberships m
        WHERE t.token_hash = $1
          AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now())
          AND u.id = t.user_id AND o.id = t.org_id
          AND m.org_id = t.org_id AND m.user_id = t.user_id
       RETURNING t.id AS token_id, u.id AS user_id, u.email, u.platform_admin,
                 o.id AS org_id, o.name AS org_name, m.roles`,
      [hashToken(token)],
    );
    if (!row) return undefined;
    return {
      tokenId: row.token_id,
      userId: row.user_id,
      email: row.email,
      orgId: row.org_id,
      orgName: row.org_name,
      roles: row.roles,
      platformAdmin: row.platform_admin,
    };
  }
}
