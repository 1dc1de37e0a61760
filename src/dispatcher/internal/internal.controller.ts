import { Body, Controller, Get, Headers, HttpCode, Post, Query, Req, UseGuards } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { Allow, IsIn, IsOptional, IsString, IsUUID, MaxLength } from 'class-validator';
import type { Request } from 'express';
import { Public } from '../../common/auth';
import { badRequest } from '../../common/errors';
import { AttemptsService } from '../core/attempts.service';
import { validateEmittedEvents } from '../core/event-validation';
import { InternalAuthGuard, InternalRequest, PlatformCredential } from './internal-auth.guard';

export class TaskFetchQuery {
  @IsUUID('all', { message: 'task_id must be a UUID' })
  task_id!: string;
}

export class EventsBody {
  @Allow()
  events!: unknown;
}

export class CompleteBody {
  @IsIn(['succeeded', 'failed', 'canceled'], { message: 'status must be succeeded, failed or canceled' })
  status!: 'succeeded' | 'failed' | 'canceled';

  @IsOptional()
  @IsString()
  @MaxLength(4000)
  error?: string;

  @Allow()
  events?: unknown;
}

function events(raw: unknown) {
  const { events, violations } = validateEmittedEvents(raw);
  if (violations.length) throw badRequest('validation_failed', `invalid events: ${violations.map((v) => `${v.field}: ${v.reason}`).join('; ')}`, violations);
  return events;
}

/**
 * The wrapper ↔ dispatcher contract (docs/architecture/contracts.md). Not for end users: the
 * user auth guard is bypassed and InternalAuthGuard takes over; absent from the public OpenAPI.
 */
@ApiExcludeController()
@Public()
@UseGuards(InternalAuthGuard)
@Controller('internal')
export class InternalController {
  constructor(private readonly attempts: AttemptsService) {}

  @Get('task-fetch')
  @PlatformCredential()
  fetch(@Query() q: TaskFetchQuery, @Headers('x-trace-node') node?: string) {
    const wrapperNode = node && /^[0-9a-f-]{36}$/.test(node) ? node : undefined;
    return this.attempts.fetch(q.task_id, wrapperNode);
  }

  @Post('events')
  @HttpCode(200)
  emit(@Req() req: Request & InternalRequest, @Body() body: EventsBody) {
    return this.attempts.emit(req.attemptToken!, events(body.events));
  }

  @Post('task-complete')
  @HttpCode(200)
  complete(@Req() req: Request & InternalRequest, @Body() body: CompleteBody) {
    return this.attempts.complete(req.attemptToken!, body.status, events(body.events), body.error);
  }

  @Get('attempt')
  status(@Req() req: Request & InternalRequest) {
    return this.attempts.status(req.attemptToken!);
  }
}
