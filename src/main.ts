import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { NestExpressApplication, type NestExpressBodyParserOptionsFor } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { AddressInfo } from 'node:net';
import { AppModule } from './app.module';
import { parseCliArgs, USAGE } from './cli/args';
import { openSystemDatabase, SystemDatabase } from './common/db';
import { traceValidationPipe } from './common/errors';
import { DatabaseWatchdog } from './common/lifecycle';
import { JsonLogger } from './common/logging/json-logger';
import { ConfigValidationError, loadTraceConfig, TraceConfig } from './config';
import { verifyJsonBody, verifyTextBody } from './common/http/request-body';
import { SelfUrl } from './common/http/self-url';

/** Exit codes: 0 clean stop, 1 runtime failure, 2 bad command line or configuration. */
const EXIT_USAGE = 2;

async function main(): Promise<void> {
  let config: TraceConfig;
  try {
    const args = parseCliArgs(process.argv.slice(2));
    if (args.help) {
      process.stdout.write(USAGE + '\n');
      return;
    }
    config = loadTraceConfig({ roles: args.roles });
  } catch (err) {
    const message = err instanceof ConfigValidationError ? err.message : `trace: ${(err as Error).message}`;
    process.stderr.write(`${message}\n\n${USAGE}\n`);
    process.exit(EXIT_USAGE);
  }

  const logger = new JsonLogger(config.logLevel);
  let database: SystemDatabase | undefined;
  let app: NestExpressApplication | undefined;
  // Installed before anything starts, so a signal during start-up still stops what was started.
  const drainAndExit = handleSignals(config, logger, async () => {
    try {
      await app?.close();
    } finally {
      await database?.stop();
    }
  });
  // A database that is gone for good (ADR 0021): drain what can be, exit 1 for the supervisor.
  const onDatabaseLost = (reason: string) => drainAndExit({ reason }, 1);
  try {
    database = await openSystemDatabase(config, logger, { onLost: onDatabaseLost });
    logger.event('info', 'Main', 'system database', { database: database.target.label });
    const nest = await NestFactory.create<NestExpressApplication>(AppModule.forRoles(config, logger, database.target), {
      logger,
      abortOnError: false,
    });
    app = nest;
    nest.get(DatabaseWatchdog).onLost(onDatabaseLost);
    configureHttp(nest);
    await nest.listen(config.http.port, config.http.host);
    const { port } = nest.getHttpServer().address() as AddressInfo;
    nest.get(SelfUrl).set(`http://127.0.0.1:${port}`);
    logger.event('info', 'Main', 'listening', { port, roles: config.roles });
  } catch (err) {
    logger.event('error', 'Main', 'start-up failed', { error: (err as Error).message, stack: (err as Error).stack });
    await database?.stop().catch(() => undefined);
    process.exit(1);
  }
}

/** Pipes, body parsers and the OpenAPI document: the same for every role. */
function configureHttp(app: NestExpressApplication): void {
  app.useGlobalPipes(traceValidationPipe());
  // DAG specs arrive as YAML text or JSON; the spec's own limit (256 KiB) is checked with a clear error.
  // The raw bytes are checked before parsing: UTF-8, and JSON nested at most MAX_BODY_DEPTH levels,
  // so nothing that walks a body recursively can run out of stack (400, never 500). Nest's types
  // leave out body-parser's `verify` because Nest replaces it when the app is created with
  // `rawBody: true`; this app is not, and the option reaches body-parser as given
  // (test/e2e/request-bodies.e2e.test.ts fails otherwise).
  app.useBodyParser('json', { limit: '1mb', verify: verifyJsonBody } as NestExpressBodyParserOptionsFor<'json'>);
  app.useBodyParser('text', {
    type: ['application/yaml', 'application/x-yaml', 'text/yaml', 'text/plain'],
    limit: '1mb',
    verify: verifyTextBody,
  } as NestExpressBodyParserOptionsFor<'text'>);
  app.disable('x-powered-by');
  // No ETags: nothing here is served conditionally, and hashing every answer cost the task path
  // (whose answers carry task payloads) measurable CPU per call (docs/benchmarks.md).
  app.set('etag', false);
  const openapi = new DocumentBuilder()
    .setTitle('Trace')
    .setDescription('On-chain data pipelines: DAGs, datasets, queries')
    .setVersion('0.1.0')
    .addBearerAuth()
    .build();
  SwaggerModule.setup('docs', app, () => SwaggerModule.createDocument(app, openapi), { jsonDocumentUrl: 'docs-json' });
}

/**
 * SIGTERM/SIGINT drain: loops stop taking work and finish their tick, this node leaves `nodes`,
 * the HTTP server stops accepting and finishes in-flight requests, the pool closes, the embedded
 * database stops, exit 0. Past TRACE_SHUTDOWN_TIMEOUT_MS we give up with exit 1. The returned
 * function runs the same drain for a reason of our own, ending with `exitCode`.
 */
function handleSignals(config: TraceConfig, logger: JsonLogger, drain: () => Promise<void>): (why: Record<string, unknown>, exitCode: number) => void {
  let draining = false;
  const drainAndExit = (why: Record<string, unknown>, exitCode: number) => {
    if (draining) return;
    draining = true;
    logger.event('info', 'Main', 'draining', why);
    const deadline = setTimeout(() => {
      logger.event('error', 'Main', 'drain timed out', { timeout_ms: config.lifecycle.shutdownTimeoutMs });
      process.exit(1);
    }, config.lifecycle.shutdownTimeoutMs);
    deadline.unref();
    drain().then(
      () => {
        logger.event('info', 'Main', 'stopped');
        process.exit(exitCode);
      },
      (err: Error) => {
        logger.event('error', 'Main', 'drain failed', { error: err.message });
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => drainAndExit({ signal }, 0);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return drainAndExit;
}

void main();
