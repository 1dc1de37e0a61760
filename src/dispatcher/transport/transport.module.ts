import { Module } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { JsonLogger } from '../../common/logging/json-logger';
import { TraceConfig } from '../../config';
import { LocalTransport } from './local-transport';
import { SqsTransport } from './sqs-transport';
import { TASK_TRANSPORT, type TaskTransport } from './task-transport';

/** The configured dispatch transport, shared by the dispatcher (relay) and the wrapper (receive). */
@Module({
  providers: [
    {
      provide: TASK_TRANSPORT,
      inject: [DataSource, TraceConfig, JsonLogger],
      useFactory: (db: DataSource, config: TraceConfig, logger: JsonLogger): TaskTransport =>
        config.dispatch.transport === 'sqs'
          ? new SqsTransport(db, { queueUrl: config.dispatch.sqs!.queueUrl, ...config.dispatch.aws, waitSeconds: Math.max(1, Math.round(config.dispatch.pollMs / 1000)) }, logger)
          : new LocalTransport(config.dispatch.pollMs),
    },
  ],
  exports: [TASK_TRANSPORT],
})
export class TransportModule {}
