import { Module } from '@nestjs/common';
import { JsonLogger } from '../common/logging/json-logger';
import { sandboxEnvOf, TraceConfig } from '../config';
import { SelfUrl } from '../common/http/self-url';
import { LAMBDA_INVOKER, LambdaDispatch } from './lambda/lambda-dispatch.service';
import { AwsLambdaInvoker, LocalLambdaInvoker } from './lambda/lambda-invoker';
import { DispatcherCoreModule } from './core/dispatcher-core.module';
import { DispatcherLoops } from './dispatcher-loops.service';
import { ClaimWaiters } from './internal/claim-waiters';
import { InternalFastPath } from './internal/internal-fast-path';
import { InternalController } from './internal/internal.controller';
import { NodeReaper } from './node-reaper.service';
import { TransportModule } from './transport/transport.module';

/** The `dispatcher` role: turns dataset events into tasks, meters them out, reaps, serves /internal/*. */
@Module({
  imports: [DispatcherCoreModule, TransportModule],
  controllers: [InternalController],
  providers: [
    ClaimWaiters,
    InternalFastPath,
    NodeReaper,
    DispatcherLoops,
    LambdaDispatch,
    {
      provide: LAMBDA_INVOKER,
      inject: [TraceConfig, JsonLogger, SelfUrl],
      useFactory: (config: TraceConfig, logger: JsonLogger, self: SelfUrl) =>
        config.dispatch.lambda.invoker === 'aws'
          ? new AwsLambdaInvoker(config.dispatch.lambda.functionName, config.dispatch.aws.region, config.dispatch.aws.endpoint)
          : new LocalLambdaInvoker(
              {
                dispatcherUrl: () => self.dispatcher()!,
                codeRoot: config.dispatch.codeRoot,
                sandbox: sandboxEnvOf(config.dispatch.sandbox),
                hiddenPaths: [config.dataDir, config.storage.dir, config.storage.scratchDir],
              },
              logger,
            ),
    },
  ],
})
export class DispatcherModule {}
