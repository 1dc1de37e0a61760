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

/**
 * A contract assembled by hand (49 bytes of runtime code), so the tests need no compiler: every
 * call emits `Transfer(msg.sender, calldata[0:32], calldata[32:64])` — LOG3 with the Transfer
 * topic, the caller and the first calldata word as topics, and the second word as data.
 */
const RUNTIME = '602035' + '600052' + '600035' + '33' + '7f' + TRANSFER_TOPIC.slice(2) + '6020' + '6000' + 'a3' + '00';
// PUSH1 len, DUP1, PUSH1 11 (this init code's length), PUSH1 0, CODECOPY, PUSH1 0, RETURN
export const TRANSFER_EMITTER_INITCODE = '0x' + '60' + (RUNTIME.length / 2).toString(16).padStart(2, '0') + '80' + '600b' + '6000' + '39' + '6000' + 'f3' + RUNTIME;

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
 * emitter contract, spread over `blocks` blocks (empty blocks mined in between). Returns the
 * emitter's address.
 */
export async function generateTraffic(anvil: Anvil, blocks: number, txs: number): Promise<string> {
  const accounts = await anvil.rpc<string[]>('eth_accounts');
  const deployHash = await anvil.rpc<string>('eth_sendTransaction', [{ from: accounts[0], data: TRANSFER_EMITTER_INITCODE }]);
  let receipt: { contractAddress: string } | null = null;
  for (let i = 0; !receipt; i++) {
    receipt = await anvil.rpc<{ contractAddress: string } | null>('eth_getTransactionReceipt', [deployHash]);
    if (!receipt && i > 200) throw new Error('the emitter contract was not mined');
    if (!receipt) await new Promise((r) => setTimeout(r, 10));
  }
  const emitter = receipt.contractAddress;
  const word = (n: bigint | string) => (typeof n === 'string' ? n.slice(2).padStart(64, '0') : n.toString(16).padStart(64, '0'));
  for (let i = 0; i < txs; i++) {
    const from = accounts[i % accounts.length]!;
    const to = accounts[(i + 3) % accounts.length]!;
    if (i % 2 === 0) {
      await anvil.rpc('eth_sendTransaction', [{ from, to, value: `0x${(BigInt(i + 1) * 10n ** 15n).toString(16)}` }]);
    } else {
      await anvil.rpc('eth_sendTransaction', [{ from, to: emitter, data: `0x${word(to)}${word(BigInt(i) * 1000n + 7n)}` }]);
    }
    const head = Number.parseInt(await anvil.rpc<string>('eth_blockNumber'), 16);
    const target = Math.floor(((i + 1) * (blocks - 1)) / txs);
    if (target > head) await anvil.rpc('anvil_mine', [`0x${(target - head).toString(16)}`]);
  }
  const head = Number.parseInt(await anvil.rpc<string>('eth_blockNumber'), 16);
  if (head < blocks - 1) await anvil.rpc('anvil_mine', [`0x${(blocks - 1 - head).toString(16)}`]);
  return emitter;
}
