/** The org role that administers an org: users, tokens, read_roles. */
export const ORG_ADMIN_ROLE = 'admin';

/** Org roles are lower snake_case, like dataset names. */
export const ROLE_NAME_PATTERN = /^[a-z][a-z0-9_]{0,63}$/;

/** Who is calling: a user acting in one org through one token. Set by the auth guard. */
export interface Principal {
  tokenId: string;
  userId: string;
  email: string;
  orgId: string;
  orgName: string;
  roles: readonly string[];
  platformAdmin: boolean;
}

export function isOrgAdmin(p: Principal): boolean {
  return p.roles.includes(ORG_ADMIN_ROLE);
}
