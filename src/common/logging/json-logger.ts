import { LoggerService } from '@nestjs/common';
import type { LogLevel } from '../../config';

const SEVERITY: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

const NEST_CHATTER = new Set(['InstanceLoader', 'RoutesResolver', 'RouterExplorer', 'NestFactory']);

export type LogFields = Record<string, unknown>;

/**
 * Structured logs: one JSON object per line on stdout, `{time, level, context, msg, ...fields}`.
 * Used as Nest's logger and directly by code that logs before Nest starts.
 */
export class JsonLogger implements LoggerService {
  constructor(
    private readonly level: LogLevel = 'info',
    private readonly write: (line: string) => void = (line) => process.stdout.write(line + '\n'),
  ) {}

  log(message: unknown, ...rest: unknown[]): void {
    const context = rest[rest.length - 1];
    // Nest's start-up chatter (module and route listings) is only interesting when debugging.
    this.emit(typeof context === 'string' && NEST_CHATTER.has(context) ? 'debug' : 'info', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.emit('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.emit('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.emit('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.emit('debug', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]): void {
    this.emit('error', message, rest);
  }

  /** Structured entry point for our own code: `logger.event('info', 'Db', 'migrations applied', {count})`. */
  event(level: LogLevel, context: string, msg: string, fields: LogFields = {}): void {
    if (SEVERITY[level] > SEVERITY[this.level]) return;
    this.write(JSON.stringify({ time: new Date().toISOString(), level, context, msg, ...fields }));
  }

  private emit(level: LogLevel, message: unknown, rest: unknown[]): void {
    if (SEVERITY[level] > SEVERITY[this.level]) return;
    // Nest passes (message, context) or (message, stack, context) for errors.
    const context = typeof rest[rest.length - 1] === 'string' ? (rest[rest.length - 1] as string) : 'App';
    const stack = level === 'error' && rest.length > 1 && typeof rest[0] === 'string' ? rest[0] : undefined;
    const fields: LogFields = {};
    let msg: string;
    if (message instanceof Error) {
      msg = message.message;
      fields.stack = message.stack;
    } else if (typeof message === 'object' && message !== null) {
      Object.assign(fields, message);
      msg = typeof (message as { msg?: unknown }).msg === 'string' ? (message as { msg: string }).msg : '';
    } else {
      msg = String(message);
    }
    if (stack) fields.stack = stack;
    this.write(JSON.stringify({ time: new Date().toISOString(), level, context, msg, ...fields }));
  }
}
