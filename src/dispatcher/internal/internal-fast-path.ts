import { HttpStatus, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import { HttpAdapterHost, ModuleRef } from '@nestjs/core';
import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import { ErrorFilter, TraceError } from '../../common/errors';
import { assertJsonBody } from '../../common/http/request-body';
import { InternalCredential } from '../../common/keys/internal-credential';
import { JsonLogger } from '../../common/logging/json-logger';
import { logRequest } from '../../common/logging/request-log.middleware';
import { MetricsRegistry } from '../../common/metrics/metrics';
import { internalCaller } from './internal-auth.guard';
import { InternalController } from './internal.controller';

/** The JSON body limit main.ts gives Express ('1mb'); a larger body is left to Express, which answers 413 as everywhere else. */
export const HOT_BODY_LIMIT = 1024 * 1024;

interface HotRoute {
  needs: 'platform' | 'attempt';
  run(controller: InternalController, token: string, body: unknown, req: IncomingMessage): Promise<unknown>;
}

const node = (req: IncomingMessage) => (typeof req.headers['x-trace-node'] === 'string' ? req.headers['x-trace-node'] : undefined);

/** The task path's per-task calls: a wrapper makes one or more of these for every task it runs. */
const HOT_ROUTES: Record<string, HotRoute> = {
  '/internal/task-claim': { needs: 'platform', run: (c, _token, body, req) => c.claim(body, node(req)) },
  '/internal/task-complete-batch': { needs: 'platform', run: (c, _token, body) => c.completeBatch(body) },
  '/internal/events': { needs: 'attempt', run: (c, token, body) => c.emit({ attemptToken: token }, body) },
  '/internal/task-complete': { needs: 'attempt', run: (c, token, body) => c.complete({ attemptToken: token }, body) },
};

/**
 * Serves the task path's hot routes (HOT_ROUTES) on the HTTP server's request event, ahead of
 * Express and Nest's router, guards and pipes, which cost the dispatcher about a quarter of its
 * CPU per task (docs/benchmarks.md, ADR 0015). Nothing else about them changes: the same
 * controller methods answer, after the same credential check (internalCaller), with the same
 * request log line, metrics and error shape (ErrorFilter.render). Everything else — other
 * routes, other methods, a query string, a body that is not `application/json` with a length
 * within HOT_BODY_LIMIT — goes to Express as before.
 */
@Injectable()
export class InternalFastPath implements OnApplicationBootstrap {
  private readonly errors: ErrorFilter;

  constructor(
    private readonly host: HttpAdapterHost,
    private readonly moduleRef: ModuleRef,
    private readonly credential: InternalCredential,
    private readonly metrics: MetricsRegistry,
    private readonly logger: JsonLogger,
  ) {
    this.errors = new ErrorFilter(logger);
  }

  onApplicationBootstrap(): void {
    const server = this.host.httpAdapter?.getHttpServer() as Server | undefined;
    const [framework, ...others] = server?.listeners('request') ?? [];
    // Only the server shape Nest makes (one listener: the Express app); otherwise all stays on Express.
    if (!server || !framework || others.length > 0) return;
    const controller = this.moduleRef.get(InternalController);
    const frameworkListener = framework as RequestListener;
    server.removeListener('request', frameworkListener);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const route = hotRoute(req);
      if (route) this.serve(controller, route, req, res);
      else frameworkListener.call(server, req, res);
    });
  }

  private serve(controller: InternalController, route: HotRoute, req: IncomingMessage, res: ServerResponse): void {
    const path = req.url!;
    logRequest(this.logger, req, res, path);
    this.metrics.timeRequest(req, res, () => path);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => res.destroy());
    req.on('end', () => void this.answer(controller, route, req, res, Buffer.concat(chunks)));
  }

  private async answer(controller: InternalController, route: HotRoute, req: IncomingMessage, res: ServerResponse, raw: Buffer): Promise<void> {
    let status: number = HttpStatus.OK;
    let body: unknown;
    try {
      // As on Express: the body is parsed before the credential is looked at.
      const parsed = parseJsonBody(raw);
      const token = internalCaller(req.headers.authorization, route.needs, this.credential);
      body = await route.run(controller, token, parsed, req);
    } catch (err) {
      ({ status, body } = this.errors.render(err, req));
    }
    if (res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}

function hotRoute(req: IncomingMessage): HotRoute | undefined {
  if (req.method !== 'POST') return undefined;
  const route = HOT_ROUTES[req.url ?? ''];
  if (!route) return undefined;
  const contentType = req.headers['content-type'];
  const type = contentType?.split(';', 1)[0]!.trim().toLowerCase();
  const length = Number(req.headers['content-length']);
  if (type !== 'application/json' || req.headers['transfer-encoding'] !== undefined || req.headers['content-encoding'] !== undefined) return undefined;
  // A declared charset other than UTF-8 is Express's to refuse (415), as everywhere else.
  if (contentType!.length > type.length && !isUtf8Charset(contentType!)) return undefined;
  if (!Number.isInteger(length) || length < 0 || length > HOT_BODY_LIMIT) return undefined;
  return route;
}

/** `charset=utf-8`, or no charset at all, in a Content-Type with parameters. */
function isUtf8Charset(contentType: string): boolean {
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(contentType)?.[1]?.toLowerCase();
  return charset === undefined || charset === 'utf-8';
}

/**
 * As Express's JSON parser (strict) with the checks main.ts gives it: UTF-8 and at most
 * MAX_BODY_DEPTH levels, on the raw bytes before parsing; empty is `{}`; otherwise an object or an array.
 */
function parseJsonBody(raw: Buffer): unknown {
  assertJsonBody(raw);
  const text = raw.toString('utf8');
  if (text.trim() === '') return {};
  const first = /\S/.exec(text)![0];
  const fail = (reason: string) => new TraceError(HttpStatus.BAD_REQUEST, 'malformed_json', `request body is not valid JSON: ${reason}`);
  if (first !== '{' && first !== '[') throw fail('a JSON object or array is expected');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw fail((err as Error).message);
  }
}
