import { createServer, IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TaskPayload } from '../core/task-payload';
import { AwsLambdaInvoker } from './lambda-invoker';

/**
 * The production invoker against a loopback HTTP endpoint that speaks Lambda's Invoke API:
 * it must send the full payload as an asynchronous (Event) invocation and never retry on its own.
 */
describe('AwsLambdaInvoker', () => {
  let server: Server;
  let endpoint: string;
  const seen: { path: string; invocationType?: string; body: string }[] = [];
  let status = 202;

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ path: req.url ?? '', invocationType: req.headers['x-amz-invocation-type'] as string | undefined, body });
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(status === 202 ? '' : JSON.stringify({ Type: 'Service', message: 'boom' }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    process.env.AWS_ACCESS_KEY_ID ??= 'test';
    process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  const payload = { task_id: 't-1', attempt: 2, attempt_token: 'tra_x', status: 'Ready', org_id: '0b6f3c1e-8f4a-4a57-9a43-5a0e6c9d2f10' } as unknown as TaskPayload;

  it('invokes the function asynchronously with the full payload', async () => {
    seen.length = 0;
    status = 202;
    await new AwsLambdaInvoker('trace-wrapper', 'us-east-1', endpoint).invoke(payload);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.path).toBe('/2015-03-31/functions/trace-wrapper/invocations');
    expect(seen[0]!.invocationType).toBe('Event');
    expect(JSON.parse(seen[0]!.body)).toEqual(payload);
  });

  it('invokes the org\'s own function when the name holds {org_id}', async () => {
    seen.length = 0;
    status = 202;
    await new AwsLambdaInvoker('trace-wrapper-{org_id}', 'us-east-1', endpoint).invoke(payload);
    expect(seen[0]!.path).toBe(`/2015-03-31/functions/trace-wrapper-${payload.org_id}/invocations`);
  });

  it('does not retry a failed invocation: the dispatcher owns retries', async () => {
    seen.length = 0;
    status = 500;
    await expect(new AwsLambdaInvoker('trace-wrapper', 'us-east-1', endpoint).invoke(payload)).rejects.toThrow();
    expect(seen).toHaveLength(1);
  });
});
