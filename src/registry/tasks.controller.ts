import { Controller, Get, Param, Post, Query } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, Matches, Max, Min } from 'class-validator';
import { CurrentPrincipal } from '../common/auth';
import { uuidParam } from '../common/errors';
import type { Principal } from '../common/identity';
import { TASK_STATUSES, TasksService } from '../dispatcher/core/tasks.service';
import { NAME_PATTERN } from './dags/dag-spec';

export class TaskListQuery {
  @IsOptional()
  @Matches(NAME_PATTERN, { message: 'dag must be a DAG name' })
  dag?: string;

  @IsOptional()
  @Matches(NAME_PATTERN, { message: 'job must be a job name' })
  job?: string;

  @IsOptional()
  @IsIn(TASK_STATUSES)
  status?: string;

  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(1000)
  limit?: number;
}

@ApiTags('tasks')
@ApiBearerAuth()
@Controller('v1')
export class TasksController {
  constructor(private readonly tasks: TasksService) {}

  @Post('dags/:name/jobs/:job/runs')
  @ApiOperation({ summary: 'Trigger a source job; returns the run\'s task id, its durable producer_task_id' })
  trigger(@CurrentPrincipal() p: Principal, @Param('name') name: string, @Param('job') job: string) {
    return this.tasks.trigger(p, name, job);
  }

  @Get('tasks')
  list(@CurrentPrincipal() p: Principal, @Query() q: TaskListQuery) {
    return this.tasks.list(p.orgId, { dag: q.dag, job: q.job, status: q.status, limit: q.limit ?? 100 });
  }

  @Get('tasks/:id')
  @ApiOperation({ summary: 'A task with its attempts and the events it emitted' })
  get(@CurrentPrincipal() p: Principal, @Param('id', uuidParam('id')) id: string) {
    return this.tasks.get(p.orgId, id);
  }

  @Post('tasks/:id/cancel')
  @ApiOperation({ summary: 'Cancel: queued tasks at once, running ones cooperatively' })
  cancel(@CurrentPrincipal() p: Principal, @Param('id', uuidParam('id')) id: string) {
    return this.tasks.cancel(p, id);
  }
}
