import { DynamicModule, Global, Module } from '@nestjs/common';
import { JsonLogger } from './json-logger';

/** Provides the process-wide JsonLogger that main.ts created before Nest started. */
@Global()
@Module({})
export class LoggingModule {
  static forRoot(logger: JsonLogger): DynamicModule {
    return { module: LoggingModule, providers: [{ provide: JsonLogger, useValue: logger }], exports: [JsonLogger] };
  }
}
