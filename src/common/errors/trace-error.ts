import { HttpStatus } from '@nestjs/common';

/**
 * The one error type our code throws on purpose. The global filter renders it as
 * `{"error": {"code", "message", "details"}}` with its HTTP status.
 * Codes are stable, lower snake_case, and owned by the module that throws them.
 */
export class TraceError extends Error {
  constructor(
    readonly status: HttpStatus,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'TraceError';
  }
}

export const badRequest = (code: string, message: string, details?: unknown): TraceError =>
  new TraceError(HttpStatus.BAD_REQUEST, code, message, details);
export const unauthorized = (message: string): TraceError =>
  new TraceError(HttpStatus.UNAUTHORIZED, 'unauthenticated', message);
export const forbidden = (code: string, message: string): TraceError =>
  new TraceError(HttpStatus.FORBIDDEN, code, message);
export const notFound = (code: string, message: string): TraceError =>
  new TraceError(HttpStatus.NOT_FOUND, code, message);
export const conflict = (code: string, message: string, details?: unknown): TraceError =>
  new TraceError(HttpStatus.CONFLICT, code, message, details);

/** One validation failure: which field and why. */
export interface FieldViolation {
  field: string;
  reason: string;
}
