/** The roles one Trace binary can run. `all` expands to every one of them. */
export enum Role {
  Dispatcher = 'dispatcher',
  Registry = 'registry',
  Query = 'query',
  Sink = 'sink',
  Delivery = 'delivery',
  Wrapper = 'wrapper',
}

export const ALL_ROLES: readonly Role[] = Object.values(Role);

export class UnknownRoleError extends Error {
  constructor(readonly unknown: string[]) {
    super(
      `unknown role${unknown.length > 1 ? 's' : ''} ${unknown.map((r) => `"${r}"`).join(', ')}; ` +
        `valid roles are: all, ${ALL_ROLES.join(', ')}`,
    );
    this.name = 'UnknownRoleError';
  }
}

/** Parses "registry,query" or "all"; rejects unknown or empty lists. Order is canonical, duplicates collapse. */
export function parseRoles(list: string): Role[] {
  const names = list
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
  if (names.length === 0) throw new UnknownRoleError(['']);
  if (names.includes('all')) {
    const rest = names.filter((n) => n !== 'all');
    const unknown = rest.filter((n) => !ALL_ROLES.includes(n as Role));
    if (unknown.length > 0) throw new UnknownRoleError(unknown);
    return [...ALL_ROLES];
  }
  const unknown = names.filter((n) => !ALL_ROLES.includes(n as Role));
  if (unknown.length > 0) throw new UnknownRoleError(unknown);
  return ALL_ROLES.filter((r) => names.includes(r));
}
