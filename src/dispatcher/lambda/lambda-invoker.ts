import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { JsonLogger } from '../../common/logging/json-logger';
import type { TaskPayload } from '../core/task-payload';

/** Starts a `runtime: lambda` attempt with its full payload. Resolves once the invocation is accepted. */
export interface LambdaInvoker {
  invoke(payload: TaskPayload): Promise<void>;
}

/**
 * Production: an asynchronous Invoke of the wrapper function. The SDK's own retries are off
 * (maxAttempts: 1): the dispatcher owns retries and timeouts through attempts and the reaper.
 * `{org_id}` in the function name is replaced by the task's org: a warm execution environment
 * (its /tmp, its memory, processes left running) is reused only by invocations of one org (ADR 0020).
 */
export class AwsLambdaInvoker implements LambdaInvoker {
  private readonly client: LambdaClient;

  constructor(private readonly functionName: string, region: string, endpoint?: string) {
    this.client = new LambdaClient({ region, maxAttempts: 1, ...(endpoint ? { endpoint } : {}) });
  }

  async invoke(payload: TaskPayload): Promise<void> {
    const result = await this.client.send(
      new InvokeCommand({ FunctionName: lambdaFunctionFor(this.functionName, payload.org_id), InvocationType: 'Event', Payload: Buffer.from(JSON.stringify(payload)) }),
    );
    if (result.StatusCode !== 202) throw new Error(`Lambda accepted the invocation with status ${result.StatusCode}`);
  }
}

/** The function that runs an org's lambda tasks: the configured name with `{org_id}` filled in. */
export function lambdaFunctionFor(template: string, orgId: string): string {
  return template.replaceAll('{org_id}', orgId);
}

/**
 * Local default: runs the same handler in a child process (node local-lambda.js, payload on stdin).
 * Like an asynchronous invoke, it returns once the process has started; the handler reports
 * through /internal/* and the reaper covers it if it dies.
 */
export class LocalLambdaInvoker implements LambdaInvoker {
  constructor(
    private readonly env: { dispatcherUrl: () => string; codeRoot: string; sandbox: Record<string, string>; hiddenPaths: string[] },
    private readonly logger: JsonLogger,
  ) {}

  invoke(payload: TaskPayload): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(__dirname, '..', '..', 'wrapper', 'lambda', 'local-lambda.js')], {
        env: {
          PATH: '/usr/local/bin:/usr/bin:/bin',
          TRACE_DISPATCHER_URL: this.env.dispatcherUrl(), TRACE_CODE_ROOT: this.env.codeRoot,
          ...this.env.sandbox,
          TRACE_SANDBOX_HIDDEN_PATHS: this.env.hiddenPaths.join(':'),
        },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      child.once('error', reject);
      child.once('spawn', () => resolve());
      child.stdin!.end(JSON.stringify(payload));
      const relay = (chunk: Buffer) => {
        for (const line of chunk.toString().split('\n').filter(Boolean)) {
          let fields: Record<string, unknown>;
          try {
            fields = JSON.parse(line) as Record<string, unknown>;
          } catch {
            fields = { msg: line };
          }
          // The child's own time/level/context are replaced by ours; its fields are kept.
          const { msg, time: _time, level: _level, context: _context, ...rest } = fields;
          this.logger.event('info', 'LocalLambda', String(msg ?? ''), { ...rest, task_id: payload.task_id });
        }
      };
      child.stdout!.on('data', relay);
      child.stderr!.on('data', relay);
    });
  }
}
