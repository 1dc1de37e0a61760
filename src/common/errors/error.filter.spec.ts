import { BadRequestException, HttpException, NotFoundException } from '@nestjs/common';
import type { Request } from 'express';
import { JsonLogger } from '../logging/json-logger';
import { ErrorFilter } from './error.filter';
import { badRequest, conflict } from './trace-error';

describe('ErrorFilter', () => {
  const logged: string[] = [];
  const filter = new ErrorFilter(new JsonLogger('debug', (line) => logged.push(line)));
  const req = { method: 'GET', originalUrl: '/v1/x', headers: {} } as unknown as Request;

  it('renders deliberate errors with their code, message and details', () => {
    expect(filter.render(conflict('org_exists', 'org "a" already exists', { name: 'a' }), req)).toEqual({
      status: 409,
      body: { error: { code: 'org_exists', message: 'org "a" already exists', details: { name: 'a' } } },
    });
    expect(filter.render(new NotFoundException('Cannot GET /v1/x'), req).body.error.code).toBe('not_found');
  });

  it('names malformed JSON as such', () => {
    const parserError = Object.assign(new SyntaxError('Unexpected end of JSON input'), { type: 'entity.parse.failed' });
    const { status, body } = filter.render(new BadRequestException('Unexpected end of JSON input', { cause: parserError }), req);
    expect(status).toBe(400);
    expect(body.error.code).toBe('malformed_json');
  });

  it('renders a deliberate error that a body parser\'s verify hook threw, as the adapter hands it over', () => {
    const refused = badRequest('body_too_deep', 'request body nests arrays and objects more than 64 levels deep', { limit: 64, offset: 70 });
    const { status, body } = filter.render(new HttpException(refused.message, 400, { cause: refused }), req);
    expect(status).toBe(400);
    expect(body).toEqual({ error: { code: 'body_too_deep', message: refused.message, details: { limit: 64, offset: 70 } } });
  });

  it('turns anything unexpected into a 500 with a correlation id, logging the stack but never sending it', () => {
    const { status, body } = filter.render(new TypeError('cannot read properties of undefined (reading "id")'), req);
    expect(status).toBe(500);
    expect(body.error.code).toBe('internal_error');
    const id = (body.error.details as { correlation_id: string }).correlation_id;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.stringify(body)).not.toContain('TypeError');
    expect(JSON.stringify(body)).not.toContain('reading "id"');
    const entry = JSON.parse(logged.at(-1)!);
    expect(entry).toMatchObject({ level: 'error', correlation_id: id, path: '/v1/x' });
    expect(entry.stack).toContain('TypeError');
  });
});
