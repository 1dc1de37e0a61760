import { Module } from '@nestjs/common';
import { WorkerService } from './worker.service';

/** The `wrapper` role: the worker that takes started attempts and runs their operators in a sandbox. */
@Module({ providers: [WorkerService], exports: [WorkerService] })
export class WrapperModule {}
