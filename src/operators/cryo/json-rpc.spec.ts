import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rpcEndpoint } from './cryo-ingest';
import { parseCryoConfig } from './cryo-config';
import { JsonRpcClient, RpcError } from './json-rpc';

/** A tiny JSON-RPC server: `answer` decides each HTTP request's fate. */
async function server(answer: (body: { id: number; method: string; params: unknown[] }[], n: number, req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close(): Promise<void>; requests: number }> {
  let requests = 0;
  const s: Server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => answer(JSON.parse(raw), requests++, req, res));
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const state = {
    url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => s.close(() => r())),
    get requests() {
      return requests;
    },
  };
  return state;
}
const ok = (res: ServerResponse, body: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
const options = { batchSize: 100, requestsPerSecond: 0, retries: 3, timeoutMs: 5000 };

describe('JsonRpcClient', () => {
  it('splits calls into batches and returns results in call order', async () => {
    const srv = await server((body, _n, _req, res) => ok(res, [...body].reverse().map((c) => ({ jsonrpc: '2.0', id: c.id, result: c.params[0] }))));
    const client = new JsonRpcClient(srv.url, options);
    const results = await client.batch<number>(Array.from({ length: 250 }, (_, i) => ({ method: 'echo', params: [i] })));
    expect(results).toEqual(Array.from({ length: 250 }, (_, i) => i));
    expect(srv.requests).toBe(3);
    await srv.close();
  });

  it('paces requests to requests_per_second', async () => {
    const srv = await server((body, _n, _req, res) => ok(res, body.map((c) => ({ id: c.id, result: 1 }))));
    const client = new JsonRpcClient(srv.url, { ...options, requestsPerSecond: 20 });
    const t0 = Date.now();
    for (let i = 0; i < 6; i++) await client.call('x', []);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(5 * 50 - 10); // 6 requests, 50 ms apart
    await srv.close();
  });

  it('retries transient failures (HTTP 503, 429, rate-limit errors) and fails at once on permanent ones', async () => {
    const flaky = await server((body, n, _req, res) => {
      if (n === 0) return res.writeHead(503).end();
      if (n === 1) return res.writeHead(429).end();
      if (n === 2) return ok(res, body.map((c) => ({ id: c.id, error: { code: -32005, message: 'limit exceeded' } })));
      ok(res, body.map((c) => ({ id: c.id, result: 'fine' })));
    });
    const client = new JsonRpcClient(flaky.url, options);
    expect(await client.call('x', [])).toBe('fine');
    expect(client.stats.retries).toBe(3);
    await flaky.close();

    const bad = await server((body, _n, _req, res) => ok(res, body.map((c) => ({ id: c.id, error: { code: -32602, message: 'invalid params' } }))));
    const strict = new JsonRpcClient(bad.url, options);
    await expect(strict.call('x', [])).rejects.toThrow(new RpcError('x failed: invalid params (code -32602)', false));
    expect(bad.requests).toBe(1);
    await bad.close();

    const down = await server((_b, _n, _req, res) => res.writeHead(500).end());
    await expect(new JsonRpcClient(down.url, { ...options, retries: 2 }).call('x', [])).rejects.toThrow('RPC endpoint answered HTTP 500');
    expect(down.requests).toBe(3);
    await down.close();
  });
});

describe('cryo_ingest endpoint and config', () => {
  const config = (raw: Record<string, unknown>) => parseCryoConfig(raw).config;

  it('takes the slot key into the URL placeholder, or as a bearer header; never without an endpoint', () => {
    expect(rpcEndpoint(config({}), { RPC_URL: 'https://rpc.example/v2/{RPC_API_KEY}', RPC_API_KEY: 'k/1' })).toEqual({ url: 'https://rpc.example/v2/k%2F1', headers: {} });
    expect(rpcEndpoint(config({}), { RPC_URL: 'https://rpc.example', RPC_API_KEY: 'k1' })).toEqual({ url: 'https://rpc.example', headers: { authorization: 'Bearer k1' } });
    expect(rpcEndpoint(config({ rpc_url: 'http://127.0.0.1:8545' }), {})).toEqual({ url: 'http://127.0.0.1:8545', headers: {} });
    expect(() => rpcEndpoint(config({}), {})).toThrow(/no RPC endpoint/);
  });

  it('reports every bad field', () => {
    const { violations } = parseCryoConfig({ datatypes: ['blocks', 'blocks', 'uncles'], chunk_size: 1.5, end_block: 5, start_block: 10, follow_head: 'yes', requests_per_second: -1, rpc_url: 'wss://x', key: 'k' }, 1);
    expect(violations.map((v) => v.field).sort()).toEqual(['chunk_size', 'datatypes', 'datatypes', 'datatypes[2]', 'end_block', 'follow_head', 'key', 'requests_per_second', 'rpc_url'].sort());
  });
});
