import { Injectable, NestMiddleware } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { randomUUID } from 'node:crypto';
import { JsonLogger } from './json-logger';

/**
 * One structured line per request, with a request id that is echoed back and used as correlation
 * id. Also used by the routes served ahead of Express (InternalFastPath), so every request is
 * logged the same way.
 */
export function logRequest(logger: JsonLogger, req: IncomingMessage, res: ServerResponse, path: string): void {
  const incoming = req.headers['x-request-id'];
  const requestId = typeof incoming === 'string' && /^[\w.-]{1,128}$/.test(incoming) ? incoming : randomUUID();
  req.headers['x-request-id'] = requestId;
  res.setHeader('x-request-id', requestId);
  const started = process.hrtime.bigint();
  res.on('finish', () => {
    logger.event(res.statusCode >= 500 ? 'error' : 'info', 'Http', 'request', {
      request_id: requestId,
      method: req.method,
      path,
      status: res.statusCode,
      duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
    });
  });
}

@Injectable()
export class RequestLogMiddleware implements NestMiddleware {
  constructor(private readonly logger: JsonLogger) {}

  use(req: Request, res: Response, next: NextFunction): void {
    logRequest(this.logger, req, res, req.originalUrl.split('?')[0]!);
    next();
  }
}
