import { ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';

/** The anvil binary from npm (`@foundry-rs/anvil` ships one per platform). */
export function anvilBinary(): string {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  return join(require.resolve(`@foundry-rs/anvil-${process.platform}-${arch}/package.json`), '..', 'bin', 'anvil');
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** An ERC-20-like Transfer(address,address,uint256) topic. */
export const TRANSFER_TOPIC = '0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef';

export interface Anvil {
  url: string;
  rpc<T = unknown>(method: string, params?: unknown[]): Promise<T>;
  stop(): Promise<void>;
  child: ChildProcess;
}

/** Starts anvil on a free loopback port (automine on) and waits until it answers. */
export async function startAnvil(args: string[] = []): Promise<Anvil> {
  const port = await freePort();
  const child = spawn(anvilBinary(), ['--host', '127.0.0.1', '--port', String(port), '--silent', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const url = `http://127.0.0.1:${port}`;
  let id = 0;
  const rpc = async <T>(method: string, params: unknown[] = []): Promise<T> => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }) });
    const body = (await res.json()) as { result?: T; error?: { message: string } };
    if (body.error) throw new Error(`${method}: ${body.error.message}`);
    return body.result as T;
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await rpc('eth_chainId');
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`anvil did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    rpc,
    child,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * A chain with real traffic: ETH transfers between anvil's accounts and Transfer logs from the
 * token contract, spread over `blocks` blocks — the walkthrough's own script
 * (`seeds/chain/traffic.mjs`). Returns the token's address.
 */
export async function generateTraffic(anvil: Anvil, blocks: number, txs: number): Promise<string> {
  const script = join(__dirname, '..', '..', 'seeds', 'chain', 'traffic.mjs');
  const { generateTraffic: generate } = (await import(script)) as { generateTraffic: (rpc: Anvil['rpc'], blocks: number, txs: number) => Promise<string> };
  return generate(anvil.rpc, blocks, txs);
}
