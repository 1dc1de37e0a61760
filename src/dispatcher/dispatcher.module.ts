import { Module } from '@nestjs/common';
import { NodeReaper } from './node-reaper.service';

/** The `dispatcher` role: turns dataset events into tasks and meters them out to workers. */
@Module({ providers: [NodeReaper] })
export class DispatcherModule {}
