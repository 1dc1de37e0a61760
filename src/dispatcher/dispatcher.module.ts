import { Module } from '@nestjs/common';
import { DispatcherCoreModule } from './core/dispatcher-core.module';
import { DispatcherLoops } from './dispatcher-loops.service';
import { InternalController } from './internal/internal.controller';
import { NodeReaper } from './node-reaper.service';
import { TransportModule } from './transport/transport.module';

/** The `dispatcher` role: turns dataset events into tasks, meters them out, reaps, serves /internal/*. */
@Module({
  imports: [DispatcherCoreModule, TransportModule],
  controllers: [InternalController],
  providers: [NodeReaper, DispatcherLoops],
})
export class DispatcherModule {}
