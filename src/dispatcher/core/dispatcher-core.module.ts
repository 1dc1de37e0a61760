import { Module } from '@nestjs/common';
import { AttemptsService } from './attempts.service';
import { Reaper } from './reaper.service';
import { TaskStarter } from './task-starter.service';
import { TasksService } from './tasks.service';
import { MeterSignal } from './meter-signal';
import { SpecCache } from './spec-cache';

/**
 * The dispatcher's data operations, without its loops or endpoints: the dispatcher role runs
 * them, and the registry's task API (trigger, list, cancel) uses TasksService.
 */
@Module({
  providers: [AttemptsService, TaskStarter, Reaper, TasksService, SpecCache, MeterSignal],
  exports: [AttemptsService, TaskStarter, Reaper, TasksService, MeterSignal],
})
export class DispatcherCoreModule {}
