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
 * Who may call an /internal/* route, from its Authorization header: user API tokens are refused
 * outright; `platform` routes (task-fetch, task-claim, the batches) need the platform credential;
 * the others an attempt token (returned), which the attempt gating then checks against the
 * task's current attempt. Shared by the guard and the hot routes (InternalFastPath).
 */
export function internalCaller(authorization: string | undefined, needs: 'platform' | 'attempt', credential: InternalCredential): string {
  const token = /^Bearer\s+(\S+)$/i.exec(authorization ?? '')?.[1];
  if (!token) throw unauthorized('internal endpoints need a platform credential or an attempt token');
  if (token.startsWith(TOKEN_PREFIX)) throw unauthorized('user API tokens are not accepted on /internal/*');
  if (needs === 'platform') {
    if (!credential.matches(token)) throw unauthorized('the platform credential is required on this endpoint');
    return token;
  }
  if (!token.startsWith(ATTEMPT_TOKEN_PREFIX)) throw unauthorized('an attempt token (tra_...) is required on this endpoint');
  return token;
}

/** /internal/* is for platform components only (internalCaller). */
@Injectable()
export class InternalAuthGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly credential: InternalCredential,
  ) {}

  canActivate(ctx: ExecutionContext): boolean {
    const req = ctx.switchToHttp().getRequest<Request & InternalRequest>();
    const needs = this.reflector.get<string | undefined>(INTERNAL_CREDENTIAL, ctx.getHandler()) === 'platform' ? 'platform' : 'attempt';
    const token = internalCaller(req.headers.authorization, needs, this.credential);
    if (needs === 'attempt') req.attemptToken = token;
    return true;
  }
}
