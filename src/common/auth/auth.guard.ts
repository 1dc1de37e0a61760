import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import { forbidden, unauthorized } from '../errors';
import { isOrgAdmin } from '../identity';
import { AuthenticatedRequest, ORG_ADMIN_ONLY, PLATFORM_ADMIN_ONLY, PUBLIC_ROUTE } from './auth.decorators';
import { TokenAuthService } from './token-auth.service';

/**
 * Every route needs `Authorization: Bearer <token>` unless marked @Public.
 * A route with an `:org` parameter is only for members of that org (403 otherwise);
 * @OrgAdminOnly and @PlatformAdminOnly narrow it further.
 */
@Injectable()
export class AuthGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly tokens: TokenAuthService,
  ) {}

  async canActivate(ctx: ExecutionContext): Promise<boolean> {
    const targets = [ctx.getHandler(), ctx.getClass()];
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC_ROUTE, targets)) return true;

    const req = ctx.switchToHttp().getRequest<Request & AuthenticatedRequest>();
    const header = req.headers.authorization;
    if (!header) throw unauthorized('missing Authorization header; send "Authorization: Bearer <token>"');
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) throw unauthorized('Authorization header must be "Bearer <token>"');
    const principal = await this.tokens.authenticate(match[1]!);
    if (!principal) throw unauthorized('token is unknown, revoked or expired');
    req.principal = principal;

    const org = req.params?.org;
    if (org !== undefined && org !== principal.orgName) {
      throw forbidden('org_forbidden', `this token acts for org "${principal.orgName}", not "${org}"`);
    }
    if (this.reflector.getAllAndOverride<boolean>(PLATFORM_ADMIN_ONLY, targets) && !principal.platformAdmin) {
      throw forbidden('platform_admin_required', 'only platform administrators may do this');
    }
    if (this.reflector.getAllAndOverride<boolean>(ORG_ADMIN_ONLY, targets) && !isOrgAdmin(principal)) {
      throw forbidden('org_admin_required', `only admins of org "${principal.orgName}" may do this`);
    }
    return true;
  }
}
