import { Module } from '@nestjs/common';
import { TransportModule } from '../dispatcher/transport/transport.module';
import { WorkerService } from './worker.service';

/** The `wrapper` role: the worker that takes started attempts and runs their operators in a sandbox. */
@Module({ imports: [TransportModule], providers: [WorkerService], exports: [WorkerService] })
export class WrapperModule {}
