import { isOrgAdmin, type Principal } from '../../common/identity';

/**
 * THE read rule (docs/standards/security_model.md), as one SQL predicate over a `datasets` row
 * aliased `alias`. Every reader — the registry API, `from: {dataset}` inputs at deploy, the Query
 * Service — asks through this function, so there is one place to get it right:
 *
 *   same org, and one of: org admin · deploy/trigger grant on the producing DAG · a role in read_roles.
 *
 * Empty read_roles therefore means: the producing DAG's deployers/triggerers and org admins only.
 * The predicate appends its parameters to `params` and returns SQL that references them.
 */
export function readablePredicate(alias: string, principal: Principal, params: unknown[]): string {
  params.push(principal.orgId, isOrgAdmin(principal), principal.roles, principal.userId);
  const [org, admin, roles, user] = [params.length - 3, params.length - 2, params.length - 1, params.length];
  return `(${alias}.org_id = $${org} AND (
      $${admin}::boolean
      OR ${alias}.read_roles && $${roles}::text[]
      OR EXISTS (SELECT 1 FROM dag_grants g WHERE g.dag_id = ${alias}.dag_id AND g.user_id = $${user})))`;
}
