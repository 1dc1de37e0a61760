import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { AddressInfo } from 'node:net';
import { AppModule } from './app.module';
import { parseCliArgs, USAGE } from './cli/args';
import { openSystemDatabase, SystemDatabase } from './common/db';
import { traceValidationPipe } from './common/errors';
import { JsonLogger } from './common/logging/json-logger';
import { ConfigValidationError, loadTraceConfig, TraceConfig } from './config';
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
  handleSignals(config, logger, async () => {
    await app?.close();
    await database?.stop();
  });
  try {
    database = await openSystemDatabase(config, logger);
    logger.event('info', 'Main', 'system database', { database: database.target.label });
    const nest = await NestFactory.create<NestExpressApplication>(AppModule.forRoles(config, logger, database.target), {
      logger,
      abortOnError: false,
    });
    app = nest;
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
  app.useBodyParser('json', { limit: '1mb' });
  app.useBodyParser('text', { type: ['application/yaml', 'application/x-yaml', 'text/yaml', 'text/plain'], limit: '1mb' });
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
 * database stops, exit 0. Past TRACE_SHUTDOWN_TIMEOUT_MS we give up with exit 1.
 */
function handleSignals(config: TraceConfig, logger: JsonLogger, drain: () => Promise<void>): void {
  let draining = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (draining) return;
    draining = true;
    logger.event('info', 'Main', 'draining', { signal });
    const deadline = setTimeout(() => {
      logger.event('error', 'Main', 'drain timed out', { timeout_ms: config.lifecycle.shutdownTimeoutMs });
      process.exit(1);
    }, config.lifecycle.shutdownTimeoutMs);
    deadline.unref();
    drain().then(
      () => {
        logger.event('info', 'Main', 'stopped');
        process.exit(0);
      },
      (err: Error) => {
        logger.event('error', 'Main', 'drain failed', { error: err.message });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

void main();
