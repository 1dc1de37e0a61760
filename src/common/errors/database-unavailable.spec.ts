import type { Request } from 'express';
import { DatabaseError } from 'pg';
import { QueryFailedError } from 'typeorm';
import { JsonLogger } from '../logging/json-logger';
import { isDatabaseUnavailable } from './database-unavailable';
import { ErrorFilter } from './error.filter';

const socketError = (code: string, syscall: string) => Object.assign(new Error(`${syscall} ${code} /data/pg/.s.PGSQL.5432`), { code, syscall, errno: -1 });
const serverError = (code: string, message: string) => Object.assign(new DatabaseError(message, 0, 'error'), { code, severity: 'FATAL' });

describe('isDatabaseUnavailable', () => {
  it.each([
    ['no server on the port', socketError('ECONNREFUSED', 'connect')],
    ['no socket file (the embedded server is gone)', socketError('ENOENT', 'connect')],
    ['the connection reset under a query', socketError('ECONNRESET', 'read')],
    ['an immediate shutdown ending our backend', serverError('57P01', 'terminating connection due to administrator command')],
    ['a crash of another backend', serverError('57P02', 'terminating connection because of crash of another server process')],
    ['a server starting up or recovering', serverError('57P03', 'the database system is starting up')],
    ['a connection exception (class 08)', serverError('08006', 'connection failure')],
    ['node-postgres losing the connection', new Error('Connection terminated unexpectedly')],
    ['a client whose connection already failed', new Error('Client has encountered a connection error and is not queryable')],
    ['the pool finding no connection in time', new Error('timeout exceeded when trying to connect')],
    ['each address refusing', new AggregateError([socketError('ECONNREFUSED', 'connect'), socketError('ECONNREFUSED', 'connect')], 'connect failed')],
  ])('is true for %s', (_, err) => {
    expect(isDatabaseUnavailable(err)).toBe(true);
  });

  it('sees through TypeORM wrapping the driver error', () => {
    expect(isDatabaseUnavailable(new QueryFailedError('SELECT 1', [], serverError('57P01', 'terminating connection due to administrator command')))).toBe(true);
  });

  it.each([
    ['a constraint violation', serverError('23505', 'duplicate key value violates unique constraint')],
    ['a statement timeout', serverError('57014', 'canceling statement due to statement timeout')],
    ['a file that is not there', socketError('ENOENT', 'open')],
    ['a programming error', new TypeError('cannot read properties of undefined')],
    ['the object store failing (AWS SDK)', Object.assign(socketError('ECONNREFUSED', 'connect'), { $metadata: {} })],
    ['a fetch to another service failing', new TypeError('fetch failed', { cause: socketError('ECONNREFUSED', 'connect') })],
    ['no error at all', undefined],
  ])('is false for %s', (_, err) => {
    expect(isDatabaseUnavailable(err)).toBe(false);
  });
});

describe('ErrorFilter with the database unavailable', () => {
  const logged: string[] = [];
  const filter = new ErrorFilter(new JsonLogger('debug', (line) => logged.push(line)));
  const req = { method: 'GET', originalUrl: '/v1/me', headers: {} } as unknown as Request;

  it('answers 503 database_unavailable, without a correlation id or a log line per request', () => {
    const { status, body } = filter.render(socketError('ENOENT', 'connect'), req);
    expect(status).toBe(503);
    expect(body).toEqual({ error: { code: 'database_unavailable', message: 'the system database is unavailable; try again shortly' } });
    expect(JSON.stringify(body)).not.toContain('PGSQL');
    expect(logged).toEqual([]);
  });
});
