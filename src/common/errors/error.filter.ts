import { ArgumentsHost, Catch, ExceptionFilter, HttpException, HttpStatus } from '@nestjs/common';
import type { Request, Response } from 'express';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { JsonLogger } from '../logging/json-logger';
import { isDatabaseUnavailable } from './database-unavailable';
import { TraceError } from './trace-error';

const STATUS_CODES: Partial<Record<number, string>> = {
  400: 'bad_request',
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  422: 'unprocessable_entity',
  429: 'too_many_requests',
};

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/**
 * One error shape everywhere. Deliberate errors keep their code and message; anything unexpected
 * is logged with its stack and a correlation id, and the client sees only the id.
 */
@Catch()
export class ErrorFilter implements ExceptionFilter {
  constructor(private readonly logger: JsonLogger) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const res = http.getResponse<Response>();
    const req = http.getRequest<Request>();
    const { status, body } = this.render(exception, req);
    if (res.headersSent) return;
    res.status(status).json(body);
  }

  /** The status and body for an exception (also used by the routes served ahead of Express). */
  render(exception: unknown, req: IncomingMessage & { originalUrl?: string }): { status: number; body: ErrorBody } {
    // A TraceError thrown by a body parser's verify hook (src/common/http/request-body.ts) reaches
    // us wrapped by the platform adapter, as the cause of an HttpException.
    const deliberate = exception instanceof TraceError ? exception : exception instanceof HttpException && exception.cause instanceof TraceError ? exception.cause : undefined;
    if (deliberate) {
      return { status: deliberate.status, body: errorBody(deliberate.code, deliberate.message, deliberate.details) };
    }
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      const response = exception.getResponse();
      const message =
        typeof response === 'string'
          ? response
          : typeof (response as { message?: unknown }).message === 'string'
            ? (response as { message: string }).message
            : exception.message;
      // The platform adapter turns body-parser failures into HttpExceptions carrying the parser error.
      if ((exception.cause as { type?: string } | undefined)?.type === 'entity.parse.failed') {
        return { status, body: errorBody('malformed_json', `request body is not valid JSON: ${message}`) };
      }
      if (status < 500) return { status, body: errorBody(STATUS_CODES[status] ?? 'http_error', message) };
    }
    // Not a fault of this request, and logged once by the database watchdog rather than per request (ADR 0021).
    if (isDatabaseUnavailable(exception)) {
      return { status: HttpStatus.SERVICE_UNAVAILABLE, body: errorBody('database_unavailable', 'the system database is unavailable; try again shortly') };
    }
    const correlationId = (req.headers['x-request-id'] as string | undefined) ?? randomUUID();
    this.logger.event('error', 'ErrorFilter', 'unhandled error', {
      correlation_id: correlationId,
      method: req.method,
      path: req.originalUrl ?? req.url,
      error: exception instanceof Error ? exception.message : String(exception),
      stack: exception instanceof Error ? exception.stack : undefined,
    });
    return {
      status: HttpStatus.INTERNAL_SERVER_ERROR,
      body: errorBody('internal_error', 'internal error; quote the correlation id when reporting it', {
        correlation_id: correlationId,
      }),
    };
  }
}

export function errorBody(code: string, message: string, details?: unknown): ErrorBody {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}
