import { JsonLogger } from '../../common/logging/json-logger';
import { loadLambdaWrapperConfig } from '../../config';
import type { TaskPayload } from '../../dispatcher/core/task-payload';
import { DispatcherClient } from '../dispatcher-client';
import { Sandbox, SANDBOX_LEASE_DIR } from '../sandbox';
import { TaskRunner } from '../task-runner';

/**
 * The wrapper as a Lambda handler: invoked by the dispatcher with the full task payload (the
 * same shape as /internal/task-fetch, attempt token included), it runs the operator exactly as
 * the ECS wrapper does and reports through /internal/events and /internal/task-complete.
 * It never needs the platform credential: the payload already is the fetched attempt.
 */
export async function handler(payload: TaskPayload): Promise<{ task_id: string; attempt: number }> {
  const config = loadLambdaWrapperConfig();
  const logger = new JsonLogger('info');
  logger.event('info', 'LambdaHandler', 'invoked', { task_id: payload.task_id, attempt: payload.attempt, payload_keys: Object.keys(payload).sort() });
  const client = new DispatcherClient(config.dispatcherUrl, '', 'lambda');
  const sandbox = new Sandbox({ ...config.sandbox, leaseDir: SANDBOX_LEASE_DIR, hiddenPaths: config.hiddenPaths });
  const runner = new TaskRunner(client, { codeRoot: config.codeRoot, sandbox, output: config.sandbox.output, statusPollMs: 500, eventBatch: 100, flushMs: 250 }, logger);
  // A Lambda is frozen once it returns: the completion must have landed by then.
  try {
    const { completed } = await runner.run(payload);
    await completed;
  } finally {
    client.close();
  }
  return { task_id: payload.task_id, attempt: payload.attempt };
}
