import { Global, MiddlewareConsumer, Module, NestModule } from '@nestjs/common';
import { APP_FILTER, APP_GUARD } from '@nestjs/core';
import { AuthGuard, TokenAuthService } from '../auth';
import { ErrorFilter } from '../errors';
import { InternalCredential } from '../keys/internal-credential';
import { SecretCipher } from '../keys/secret-cipher';
import { BackgroundLoops, NodeRegistry } from '../lifecycle';
import { RequestLogMiddleware } from '../logging/request-log.middleware';
import { HttpMetricsMiddleware, MetricsRegistry } from '../metrics/metrics';
import { HealthController } from './health.controller';
import { SelfUrl } from './self-url';

/**
 * What every role has, whatever else it runs: health, metrics, the auth guard, the error filter,
 * request logs, background loops and this process's row in `nodes`.
 */
@Global()
@Module({
  controllers: [HealthController],
  providers: [
    MetricsRegistry,
    TokenAuthService,
    BackgroundLoops,
    NodeRegistry,
    SecretCipher,
    InternalCredential,
    SelfUrl,
    { provide: APP_GUARD, useClass: AuthGuard },
    { provide: APP_FILTER, useClass: ErrorFilter },
  ],
  exports: [MetricsRegistry, BackgroundLoops, NodeRegistry, TokenAuthService, SecretCipher, InternalCredential, SelfUrl],
})
export class CoreModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(RequestLogMiddleware, HttpMetricsMiddleware).forRoutes('*path');
  }
}
