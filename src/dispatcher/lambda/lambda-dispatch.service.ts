import { Inject, Injectable } from '@nestjs/common';
import { JsonLogger } from '../../common/logging/json-logger';
import { AttemptsService } from '../core/attempts.service';
import type { LambdaInvoker } from './lambda-invoker';

export const LAMBDA_INVOKER = Symbol('LAMBDA_INVOKER');

/**
 * `runtime: lambda` attempts: the dispatcher binds each started attempt (issuing its token, as a
 * task-fetch would) and invokes the function with that full payload. A refused invocation fails
 * the attempt through the normal completion path, so retries follow max_attempts.
 */
@Injectable()
export class LambdaDispatch {
  constructor(
    private readonly attempts: AttemptsService,
    @Inject(LAMBDA_INVOKER) private readonly invoker: LambdaInvoker,
    private readonly logger: JsonLogger,
  ) {}

  async invoke(taskIds: string[]): Promise<void> {
    await Promise.all(
      taskIds.map(async (taskId) => {
        const payload = await this.attempts.fetch(taskId, undefined);
        try {
          await this.invoker.invoke(payload);
        } catch (err) {
          this.logger.event('warn', 'LambdaDispatch', 'invocation failed', { task_id: taskId, attempt: payload.attempt, error: (err as Error).message });
          await this.attempts.complete(payload.attempt_token, 'failed', [], `invocation failed: ${(err as Error).message}`);
        }
      }),
    );
  }
}
