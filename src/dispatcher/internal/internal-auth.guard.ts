import { CanActivate, ExecutionContext, Injectable, SetMetadata } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import { unauthorized } from '../../common/errors';
import { TOKEN_PREFIX } from '../../common/identity';
import { InternalCredential } from '../../common/keys/internal-credential';
import { ATTEMPT_TOKEN_PREFIX } from '../core/attempts.service';

export const INTERNAL_CREDENTIAL = 'trace:internal-credential';
/** The route takes the platform credential (task-fetch); the others take an attempt token. */
export const PlatformCredential = () => SetMetadata(INTERNAL_CREDENTIAL, 'platform');

export interface InternalRequest {
  attemptToken?: string;
}

/**
 * /internal/* is for platform components only. User API tokens are refused outright; task-fetch
 * needs the platform credential; events, completion and status need the attempt's own token,
 * which the attempt gating then checks against the task's current attempt.
 */
@Injectable()
export class InternalAuthGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly credential: InternalCredential,
  ) {}

  canActivate(ctx: ExecutionContext): boolean {
    const req = ctx.switchToHttp().getRequest<Request & InternalRequest>();
    const token = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!token) throw unauthorized('internal endpoints need a platform credential or an attempt token');
    if (token.startsWith(TOKEN_PREFIX)) throw unauthorized('user API tokens are not accepted on /internal/*');
    const needs = this.reflector.get<string | undefined>(INTERNAL_CREDENTIAL, ctx.getHandler());
    if (needs === 'platform') {
      if (!this.credential.matches(token)) throw unauthorized('the platform credential is required on this endpoint');
      return true;
    }
    if (!token.startsWith(ATTEMPT_TOKEN_PREFIX)) throw unauthorized('an attempt token (tra_...) is required on this endpoint');
    req.attemptToken = token;
    return true;
  }
}
