import { Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { sql, sqlOne } from '../../common/db';
import { conflict, forbidden, notFound } from '../../common/errors';
import { displayPrefix, generateToken, hashToken, isOrgAdmin, ORG_ADMIN_ROLE, Principal } from '../../common/identity';

export interface OrgView {
  id: string;
  name: string;
  created_at: Date;
}
export interface MemberView {
  user_id: string;
  email: string;
  display_name: string | null;
  roles: string[];
  joined_at: Date;
}
export interface TokenView {
  id: string;
  name: string;
  user_id: string;
  prefix: string;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
}
/** Returned once, when a token is issued; the secret is never stored or shown again. */
export interface IssuedToken extends TokenView {
  token: string;
}

const UNIQUE_VIOLATION = '23505';

/** Orgs, members and their roles, and API tokens. Every org-scoped method takes the org id first. */
@Injectable()
export class IdentityService {
  constructor(private readonly db: DataSource) {}

  async createOrg(name: string, adminEmail: string): Promise<{ org: OrgView; admin: MemberView; token: IssuedToken }> {
    return this.db.transaction(async (tx) => {
      const [org] = (await tx
        .query(`INSERT INTO orgs (name) VALUES ($1) RETURNING id, name, created_at`, [name])
        .catch((err: { code?: string }) => {
          throw err.code === UNIQUE_VIOLATION ? conflict('org_exists', `org "${name}" already exists`) : err;
        })) as OrgView[];
      const userId = await this.upsertUser(tx, adminEmail, null, false);
      await tx.query(`INSERT INTO org_memberships (org_id, user_id, roles) VALUES ($1, $2, $3)`, [org!.id, userId, [ORG_ADMIN_ROLE]]);
      const token = await this.insertToken(tx, org!.id, userId, `${name} admin`, undefined);
      return { org: org!, admin: await this.member(tx, org!.id, userId), token };
    });
  }

  async getOrg(orgId: string): Promise<OrgView> {
    const org = await sqlOne<OrgView>(this.db, `SELECT id, name, created_at FROM orgs WHERE id = $1`, [orgId]);
    if (!org) throw notFound('org_not_found', 'org not found');
    return org;
  }

  async listMembers(orgId: string): Promise<MemberView[]> {
    return sql<MemberView>(this.db, `${MEMBER_SELECT} WHERE m.org_id = $1 ORDER BY u.email`, [orgId]);
  }

  async addMember(orgId: string, email: string, displayName: string | null, roles: string[]): Promise<MemberView> {
    return this.db.transaction(async (tx) => {
      const userId = await this.upsertUser(tx, email, displayName, false);
      await tx
        .query(`INSERT INTO org_memberships (org_id, user_id, roles) VALUES ($1, $2, $3)`, [orgId, userId, dedupe(roles)])
        .catch((err: { code?: string }) => {
          throw err.code === UNIQUE_VIOLATION ? conflict('member_exists', `${email} is already a member of this org`) : err;
        });
      return this.member(tx, orgId, userId);
    });
  }

  async setRoles(orgId: string, userId: string, roles: string[]): Promise<MemberView> {
    return this.db.transaction(async (tx) => {
      await this.lockOrg(tx, orgId);
      const current = await this.member(tx, orgId, userId);
      const next = dedupe(roles);
      if (current.roles.includes(ORG_ADMIN_ROLE) && !next.includes(ORG_ADMIN_ROLE)) await this.assertNotLastAdmin(tx, orgId);
      await tx.query(`UPDATE org_memberships SET roles = $3, updated_at = now() WHERE org_id = $1 AND user_id = $2`, [orgId, userId, next]);
      return this.member(tx, orgId, userId);
    });
  }

  /** Removes the membership; its tokens go with it (foreign key cascade). */
  async removeMember(orgId: string, userId: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      await this.lockOrg(tx, orgId);
      const current = await this.member(tx, orgId, userId);
      if (current.roles.includes(ORG_ADMIN_ROLE)) await this.assertNotLastAdmin(tx, orgId);
      await tx.query(`DELETE FROM org_memberships WHERE org_id = $1 AND user_id = $2`, [orgId, userId]);
    });
  }

  async issueToken(orgId: string, userId: string, name: string, expiresInDays?: number): Promise<IssuedToken> {
    return this.db.transaction(async (tx) => {
      await this.member(tx, orgId, userId);
      return this.insertToken(tx, orgId, userId, name, expiresInDays);
    });
  }

  async listTokens(orgId: string, userId: string): Promise<TokenView[]> {
    await this.member(this.db.manager, orgId, userId);
    return sql<TokenView>(this.db, `${TOKEN_SELECT} WHERE org_id = $1 AND user_id = $2 ORDER BY created_at`, [orgId, userId]);
  }

  /** Admins may revoke any token of their org; members only their own. Revoking twice is harmless. */
  async revokeToken(orgId: string, tokenId: string, caller: Principal): Promise<TokenView> {
    const token = await sqlOne<TokenView>(this.db, `${TOKEN_SELECT} WHERE org_id = $1 AND id = $2`, [orgId, tokenId]);
    if (!token) throw notFound('token_not_found', 'token not found in this org');
    if (token.user_id !== caller.userId && !isOrgAdmin(caller)) {
      throw forbidden('org_admin_required', 'only org admins may revoke other members\' tokens');
    }
    const revoked = await sqlOne<TokenView>(
      this.db,
      `UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE org_id = $1 AND id = $2
       RETURNING ${TOKEN_COLUMNS}`,
      [orgId, tokenId],
    );
    return revoked!;
  }

  /**
   * First start of an all-in-one platform (see DevOrgBootstrap). Creates org `dev` and its admin if missing. The admin gets `configuredToken` when given
   * (registered even if the org already existed), otherwise a generated token, only on creation.
   * Returns the token it stored, if any.
   */
  async ensureDevOrg(configuredToken: string | undefined): Promise<{ created: boolean; token?: string }> {
    return this.db.transaction(async (tx) => {
      await tx.query(`SELECT pg_advisory_xact_lock(7265173002)`);
      const [existing] = (await tx.query(`SELECT id FROM orgs WHERE name = 'dev'`)) as { id: string }[];
      let orgId = existing?.id;
      const created = !orgId;
      let userId: string;
      if (!orgId) {
        [{ id: orgId }] = (await tx.query(`INSERT INTO orgs (name) VALUES ('dev') RETURNING id`)) as { id: string }[];
        userId = await this.upsertUser(tx, 'admin@dev.local', 'Dev admin', true);
        await tx.query(`INSERT INTO org_memberships (org_id, user_id, roles) VALUES ($1, $2, $3)`, [orgId, userId, [ORG_ADMIN_ROLE]]);
      } else {
        const [admin] = (await tx.query(
          `SELECT m.user_id FROM org_memberships m JOIN users u ON u.id = m.user_id
            WHERE m.org_id = $1 AND $2 = ANY (m.roles) ORDER BY u.platform_admin DESC, m.created_at LIMIT 1`,
          [orgId, ORG_ADMIN_ROLE],
        )) as { user_id: string }[];
        if (!admin || !configuredToken) return { created: false };
        userId = admin.user_id;
        const [known] = (await tx.query(`SELECT 1 FROM api_tokens WHERE token_hash = $1`, [hashToken(configuredToken)])) as unknown[];
        if (known) return { created: false };
      }
      const token = configuredToken ?? generateToken();
      await this.insertToken(tx, orgId!, userId, 'dev token', undefined, token);
      return { created, token };
    });
  }

  private async upsertUser(tx: EntityManager, email: string, displayName: string | null, platformAdmin: boolean): Promise<string> {
    const [row] = (await tx.query(
      `INSERT INTO users (email, display_name, platform_admin) VALUES ($1, $2, $3)
       ON CONFLICT (lower(email)) DO UPDATE SET display_name = coalesce(users.display_name, EXCLUDED.display_name)
       RETURNING id`,
      [email, displayName, platformAdmin],
    )) as { id: string }[];
    return row!.id;
  }

  private async insertToken(
    tx: EntityManager,
    orgId: string,
    userId: string,
    name: string,
    expiresInDays: number | undefined,
    secret: string = generateToken(),
  ): Promise<IssuedToken> {
    const [row] = (await tx.query(
      `INSERT INTO api_tokens (org_id, user_id, name, token_hash, token_prefix, expires_at)
       VALUES ($1, $2, $3, $4, $5, CASE WHEN $6::int IS NULL THEN NULL ELSE now() + make_interval(days => $6::int) END)
       RETURNING ${TOKEN_COLUMNS}`,
      [orgId, userId, name, hashToken(secret), displayPrefix(secret), expiresInDays ?? null],
    )) as TokenView[];
    return { ...row!, token: secret };
  }

  private async member(tx: EntityManager, orgId: string, userId: string): Promise<MemberView> {
    const m = await sqlOne<MemberView>(tx, `${MEMBER_SELECT} WHERE m.org_id = $1 AND m.user_id = $2`, [orgId, userId]);
    if (!m) throw notFound('member_not_found', 'no such member in this org');
    return m;
  }

  private async lockOrg(tx: EntityManager, orgId: string): Promise<void> {
    await tx.query(`SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE`, [orgId]);
  }

  private async assertNotLastAdmin(tx: EntityManager, orgId: string): Promise<void> {
    const [{ count }] = (await tx.query(
      `SELECT count(*)::int AS count FROM org_memberships WHERE org_id = $1 AND $2 = ANY (roles)`,
      [orgId, ORG_ADMIN_ROLE],
    )) as { count: number }[];
    if (count <= 1) throw conflict('last_admin', 'an org must keep at least one admin');
  }
}

const MEMBER_SELECT = `
  SELECT u.id AS user_id, u.email, u.display_name, m.roles, m.created_at AS joined_at
    FROM org_memberships m JOIN users u ON u.id = m.user_id`;
const TOKEN_COLUMNS = `id, name, user_id, token_prefix AS prefix, created_at, expires_at, revoked_at, last_used_at`;
const TOKEN_SELECT = `SELECT ${TOKEN_COLUMNS} FROM api_tokens`;

function dedupe(roles: string[]): string[] {
  return [...new Set(roles)].sort();
}
