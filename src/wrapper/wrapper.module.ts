import { Module } from '@nestjs/common';
import { StorageModule } from '../common/storage';
import { TransportModule } from '../dispatcher/transport/transport.module';
import { WorkerService } from './worker.service';

/** The `wrapper` role: the worker that takes started attempts and runs their operators in a sandbox. */
@Module({ imports: [TransportModule, StorageModule], providers: [WorkerService], exports: [WorkerService] })
export class WrapperModule {}
