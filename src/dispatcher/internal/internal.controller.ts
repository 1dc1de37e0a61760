import { Body, Controller, Get, Headers, HttpCode, Post, Put, Query, Req, UseGuards } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { Allow, IsInt, IsUUID, Min } from 'class-validator';
import type { Request } from 'express';
import { Public } from '../../common/auth';
import { badRequest, type FieldViolation, TraceError } from '../../common/errors';
import { ATTEMPT_TOKEN_PREFIX, AttemptsService, type Completion, type Outcome } from '../core/attempts.service';
import { validateEmittedEvents } from '../core/event-validation';
import { type EmittedEvent, INTERNAL_BATCH_MAX } from '../core/task-payload';
import { ClaimWaiters } from './claim-waiters';
import { InternalAuthGuard, type InternalRequest, PlatformCredential } from './internal-auth.guard';

export class TaskFetchQuery {
  @IsUUID('all', { message: 'task_id must be a UUID' })
  task_id!: string;
}

const STATE_MAX_BYTES = 1024 * 1024;

export class OperatorStateBody {
  @IsInt({ message: 'expected_version must be an integer (0 when there is no state yet)' })
  @Min(0, { message: 'expected_version must be an integer (0 when there is no state yet)' })
  expected_version!: number;

  @Allow()
  state!: unknown;
}

export class TaskFetchBatchBody {
  @Allow()
  task_ids!: unknown;
}

/** The longest a task-claim may wait for work (a long poll), in ms. */
export const CLAIM_WAIT_MAX_MS = 20_000;

/**
 * The hot routes' bodies are validated by hand (the DTO machinery costs the task path CPU per
 * call), with the same error shape: a JSON object with only the known fields, each checked.
 */
function objectBody(raw: unknown, known: string[], shape: string): Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw badRequest('validation_failed', `body: must be a JSON object ${shape}`, [{ field: 'body', reason: `must be a JSON object ${shape}` }]);
  const unknown = Object.keys(raw).filter((k) => !known.includes(k)).map((k) => ({ field: k, reason: 'is not a known field' }));
  if (unknown.length) throw invalid(unknown);
  return raw as Record<string, unknown>;
}

function invalid(violations: FieldViolation[], what = 'request is invalid'): TraceError {
  return badRequest('validation_failed', `${what}: ${violations.map((v) => `${v.field}: ${v.reason}`).join('; ')}`, violations);
}

/** `{"max": n, "wait_ms"?: w}`: how many attempts a wrapper can take now, and how long it will wait for one if there is none. */
function claimBody(raw: unknown): { max: number; waitMs: number } {
  const { max, wait_ms: waitMs = 0 } = objectBody(raw, ['max', 'wait_ms'], '{"max": n}');
  const violations: FieldViolation[] = [];
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > INTERNAL_BATCH_MAX) violations.push({ field: 'max', reason: `must be an integer from 1 to ${INTERNAL_BATCH_MAX}` });
  if (typeof waitMs !== 'number' || !Number.isInteger(waitMs) || waitMs < 0 || waitMs > CLAIM_WAIT_MAX_MS) violations.push({ field: 'wait_ms', reason: `must be an integer from 0 to ${CLAIM_WAIT_MAX_MS}` });
  if (violations.length) throw invalid(violations);
  return { max: max as number, waitMs: waitMs as number };
}

/** `{"completions": [...]}` (task-complete-batch). */
function completionsBody(raw: unknown): Completion[] {
  return completions(objectBody(raw, ['completions'], '{"completions": [...]}').completions);
}

/** `{"events": [...]}` (events). */
function eventsBody(raw: unknown): EmittedEvent[] {
  return events(objectBody(raw, ['events'], '{"events": [...]}').events);
}

const OUTCOMES = ['succeeded', 'failed', 'canceled'];

/** `{"status": ..., "error"?: ..., "events"?: [...]}` (task-complete). */
function completeBody(raw: unknown): { status: Outcome; error?: string; events: EmittedEvent[] } {
  const { status, error, events: list } = objectBody(raw, ['status', 'error', 'events'], '{"status": ...}');
  const violations: FieldViolation[] = [];
  if (!OUTCOMES.includes(status as string)) violations.push({ field: 'status', reason: 'must be succeeded, failed or canceled' });
  if (error !== undefined && (typeof error !== 'string' || error.length > 4000)) violations.push({ field: 'error', reason: 'must be a string of at most 4000 characters' });
  const parsed = validateEmittedEvents(list);
  violations.push(...parsed.violations);
  if (violations.length) throw invalid(violations);
  return { status: status as Outcome, error: error as string | undefined, events: parsed.events };
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function taskIds(raw: unknown): string[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > INTERNAL_BATCH_MAX) {
    throw badRequest('validation_failed', `task_ids: must be an array of 1 to ${INTERNAL_BATCH_MAX} task ids`, [{ field: 'task_ids', reason: `must be an array of 1 to ${INTERNAL_BATCH_MAX} task ids` }]);
  }
  const violations = raw.flatMap((id, i) => (typeof id === 'string' && UUID_RE.test(id) ? [] : [{ field: `task_ids[${i}]`, reason: 'must be a UUID' }]));
  if (violations.length) throw invalid(violations, 'invalid task_ids');
  return raw as string[];
}

function completions(raw: unknown): Completion[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > INTERNAL_BATCH_MAX) {
    throw badRequest('validation_failed', `completions: must be an array of 1 to ${INTERNAL_BATCH_MAX} completions`, [{ field: 'completions', reason: `must be an array of 1 to ${INTERNAL_BATCH_MAX} completions` }]);
  }
  const violations: FieldViolation[] = [];
  const seen = new Set<string>();
  const out = raw.map((c: unknown, i): Completion => {
    const at = `completions[${i}]`;
    if (typeof c !== 'object' || c === null || Array.isArray(c)) {
      violations.push({ field: at, reason: 'must be an object' });
      return undefined as never;
    }
    const { attempt_token: token, status, error, events: evs, ...rest } = c as Record<string, unknown>;
    for (const k of Object.keys(rest)) violations.push({ field: `${at}.${k}`, reason: 'is not a known field' });
    if (typeof token !== 'string' || !token.startsWith(ATTEMPT_TOKEN_PREFIX)) violations.push({ field: `${at}.attempt_token`, reason: `must be an attempt token (${ATTEMPT_TOKEN_PREFIX}...)` });
    else if (seen.has(token)) violations.push({ field: `${at}.attempt_token`, reason: 'completes an attempt already completed earlier in this batch' });
    else seen.add(token);
    if (!OUTCOMES.includes(status as string)) violations.push({ field: `${at}.status`, reason: 'must be succeeded, failed or canceled' });
    if (error !== undefined && (typeof error !== 'string' || error.length > 4000)) violations.push({ field: `${at}.error`, reason: 'must be a string of at most 4000 characters' });
    const parsed = validateEmittedEvents(evs, `${at}.events`);
    violations.push(...parsed.violations);
    return { token: token as string, outcome: status as Outcome, error: error as string | undefined, events: parsed.events };
  });
  if (violations.length) throw invalid(violations, 'invalid completions');
  return out;
}

/** A batch answers each item in its place: the item's result, or its error in the one error shape. */
function itemError(err: TraceError) {
  return { status_code: err.status, error: { code: err.code, message: err.message } };
}

function events(raw: unknown): EmittedEvent[] {
  const { events, violations } = validateEmittedEvents(raw);
  if (violations.length) throw invalid(violations, 'invalid events');
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
  constructor(
    private readonly attempts: AttemptsService,
    private readonly waiters: ClaimWaiters,
  ) {}

  @Get('task-fetch')
  @PlatformCredential()
  fetch(@Query() q: TaskFetchQuery, @Headers('x-trace-node') node?: string) {
    const wrapperNode = node && /^[0-9a-f-]{36}$/.test(node) ? node : undefined;
    return this.attempts.fetch(q.task_id, wrapperNode);
  }

  /**
   * The local transport: up to `max` started attempts, claimed, bound to the caller and fetched
   * in one call. With `wait_ms`, an empty claim waits (a long poll) until work may be there.
   */
  @Post('task-claim')
  @HttpCode(200)
  @PlatformCredential()
  async claim(@Body() body: unknown, @Headers('x-trace-node') node?: string) {
    const { max, waitMs } = claimBody(body);
    const wrapperNode = node && /^[0-9a-f-]{36}$/.test(node) ? node : undefined;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const seen = this.waiters.current;
      // A long poll when nothing can be claimable waits at once, without looking.
      if (!(waitMs > 0 && this.waiters.drainedNow)) {
        const tasks = await this.attempts.claim(max, wrapperNode);
        if (tasks.length < max) this.waiters.drained(seen);
        if (tasks.length > 0 || Date.now() >= deadline) return { tasks };
      }
      // Woken to claim again, or answered by the statement that started work (events).
      const served = await this.waiters.wait(seen, deadline - Date.now(), { max, node: wrapperNode });
      if (served?.length) return { tasks: served };
      if (this.waiters.closed || (Date.now() >= deadline && this.waiters.current === seen)) return { tasks: [] };
    }
  }

  /** Several task-fetches in one call (a wrapper that received several messages). */
  @Post('task-fetch-batch')
  @HttpCode(200)
  @PlatformCredential()
  fetchBatch(@Body() body: TaskFetchBatchBody, @Headers('x-trace-node') node?: string) {
    const wrapperNode = node && /^[0-9a-f-]{36}$/.test(node) ? node : undefined;
    return this.attempts.fetchMany(taskIds(body.task_ids), wrapperNode).then((results) => ({
      tasks: results.map((r) => ('error' in r ? { task_id: r.task_id, ...itemError(r.error) } : r)),
    }));
  }

  /** Several completions in one call; each carries its attempt token, the proof of which attempt it completes. */
  @Post('task-complete-batch')
  @HttpCode(200)
  @PlatformCredential()
  completeBatch(@Body() body: unknown) {
    return this.attempts.completeMany(completionsBody(body)).then((results) => ({
      results: results.map((r) => ('error' in r ? itemError(r.error) : r)),
    }));
  }

  @Post('events')
  @HttpCode(200)
  emit(@Req() req: InternalRequest, @Body() body: unknown) {
    const events = eventsBody(body);
    // The statement that stores the events answers the longest-waiting claim, if there is one.
    const waiting = this.waiters.take();
    return this.attempts.emit(req.attemptToken!, events, waiting?.claim).then(
      ({ served, durable, ...answer }) => {
        // The worker gets its attempt at once; the producer hears its events are accepted only
        // once they are on disk (ADR 0019).
        waiting?.answer(served);
        return durable.then(() => answer);
      },
      (err: unknown) => {
        waiting?.answer(undefined);
        throw err;
      },
    );
  }

  @Post('task-complete')
  @HttpCode(200)
  complete(@Req() req: InternalRequest, @Body() body: unknown) {
    const { status, error, events } = completeBody(body);
    return this.attempts.complete(req.attemptToken!, status, events, error);
  }

  /** Operator state (stateful built-in operators): read, and compare-and-set. */
  @Get('operator-state')
  readState(@Req() req: Request & InternalRequest) {
    return this.attempts.readState(req.attemptToken!);
  }

  @Put('operator-state')
  @HttpCode(200)
  writeState(@Req() req: Request & InternalRequest, @Body() body: OperatorStateBody) {
    if (body.state === undefined || Buffer.byteLength(JSON.stringify(body.state)) > STATE_MAX_BYTES) {
      throw badRequest('validation_failed', `state: must be present and at most ${STATE_MAX_BYTES} bytes as JSON`, [{ field: 'state', reason: `must be present and at most ${STATE_MAX_BYTES} bytes as JSON` }]);
    }
    return this.attempts.writeState(req.attemptToken!, body.expected_version, body.state);
  }

  /** Where a built-in operator may read its input event's files from (not a hot route: asked only off the common path). */
  @Get('input-locations')
  inputLocations(@Req() req: Request & InternalRequest) {
    return this.attempts.inputLocations(req.attemptToken!);
  }

  @Get('attempt')
  status(@Req() req: Request & InternalRequest) {
    return this.attempts.status(req.attemptToken!);
  }
}
