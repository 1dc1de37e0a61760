import { DynamicModule, Global, Module } from '@nestjs/common';
import { ConfigModule } from '@nestjs/config';
import { TraceConfig } from './trace-config';

/**
 * Makes the one validated TraceConfig injectable everywhere. The config is loaded and validated
 * before Nest starts (main.ts needs it to pick roles and start the embedded database), so
 * @nestjs/config is given the already-validated object rather than reading the environment again.
 */
@Global()
@Module({})
export class TraceConfigModule {
  static forRoot(config: TraceConfig): DynamicModule {
    return {
      module: TraceConfigModule,
      imports: [ConfigModule.forRoot({ ignoreEnvFile: true, isGlobal: true, load: [() => ({ trace: config })] })],
      providers: [{ provide: TraceConfig, useValue: config }],
      exports: [TraceConfig],
    };
  }
}
