import { createParamDecorator, ExecutionContext, SetMetadata } from '@nestjs/common';
import type { Principal } from '../identity';

export const PUBLIC_ROUTE = 'trace:public';
export const ORG_ADMIN_ONLY = 'trace:org-admin';
export const PLATFORM_ADMIN_ONLY = 'trace:platform-admin';

/** No token needed (health, metrics). */
export const Public = () => SetMetadata(PUBLIC_ROUTE, true);
/** Only members holding the org's `admin` role. */
export const OrgAdminOnly = () => SetMetadata(ORG_ADMIN_ONLY, true);
/** Only platform administrators (creating orgs). */
export const PlatformAdminOnly = () => SetMetadata(PLATFORM_ADMIN_ONLY, true);

export interface AuthenticatedRequest {
  principal?: Principal;
}

/** The caller, as the guard established it. */
export const CurrentPrincipal = createParamDecorator((_: unknown, ctx: ExecutionContext): Principal => {
  const principal = ctx.switchToHttp().getRequest<AuthenticatedRequest>().principal;
  if (!principal) throw new Error('CurrentPrincipal used on a route without authentication');
  return principal;
});
