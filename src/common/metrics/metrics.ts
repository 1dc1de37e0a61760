import { Injectable, NestMiddleware } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';

/** The process's Prometheus registry: Node runtime metrics plus Trace's own, prefixed `trace_`. */
@Injectable()
export class MetricsRegistry {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({
    name: 'trace_http_requests_total',
    help: 'HTTP requests served, by method, route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: 'trace_http_request_duration_seconds',
    help: 'HTTP request latency, by method and route',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'trace_' });
  }

  /** Counts and times a request when it finishes, under the route pattern `route()` names then. */
  timeRequest(req: IncomingMessage, res: ServerResponse, route: () => string): void {
    const end = this.httpDuration.startTimer();
    res.on('finish', () => {
      const labels = { method: req.method ?? 'GET', route: route() };
      end(labels);
      this.httpRequests.inc({ ...labels, status: String(res.statusCode) });
    });
  }
}

/** Counts and times every request; labels by matched route pattern so cardinality stays bounded. */
@Injectable()
export class HttpMetricsMiddleware implements NestMiddleware {
  constructor(private readonly metrics: MetricsRegistry) {}

  use(req: Request, res: Response, next: NextFunction): void {
    this.metrics.timeRequest(req, res, () => `${req.baseUrl ?? ''}${(req.route as { path?: string } | undefined)?.path ?? 'unmatched'}`);
    next();
  }
}
