#!/usr/bin/env node
/**
 * ERC-20-style traffic on a local chain (anvil), for the walkthrough in the README and the tests:
 * deploys a tiny contract that emits Transfer(from, to, amount) on every call, then spreads ETH
 * transfers and token transfers over the requested number of blocks (empty blocks mined between).
 *
 *   node seeds/chain/traffic.mjs [rpc_url=http://127.0.0.1:8545] [blocks=12000] [transactions=200]
 */

/** keccak256("Transfer(address,address,uint256)") */
export const TRANSFER_TOPIC = '0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef';

// Runtime (49 bytes, assembled by hand so no compiler is needed): LOG3 with the Transfer topic,
// topic1 = caller, topic2 = calldata[0:32], data = calldata[32:64].
//   PUSH1 32 CALLDATALOAD PUSH1 0 MSTORE PUSH1 0 CALLDATALOAD CALLER PUSH32 <topic> PUSH1 32 PUSH1 0 LOG3 STOP
const RUNTIME = '602035' + '600052' + '600035' + '33' + '7f' + TRANSFER_TOPIC.slice(2) + '6020' + '6000' + 'a3' + '00';
// Init code: PUSH1 len, DUP1, PUSH1 11 (its own length), PUSH1 0, CODECOPY, PUSH1 0, RETURN
export const EMITTER_INITCODE = '0x60' + (RUNTIME.length / 2).toString(16).padStart(2, '0') + '80600b6000396000f3' + RUNTIME;

/** A JSON-RPC caller for one endpoint. */
export function rpcClient(url) {
  let id = 0;
  return async (method, params = []) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }) });
    const body = await res.json();
    if (body.error) throw new Error(`${method}: ${body.error.message}`);
    return body.result;
  };
}

/** Half ETH transfers, half token transfers, spread evenly up to block `blocks - 1`. Returns the token's address. */
export async function generateTraffic(rpc, blocks, transactions) {
  const accounts = await rpc('eth_accounts');
  const deploy = await rpc('eth_sendTransaction', [{ from: accounts[0], data: EMITTER_INITCODE }]);
  let receipt = null;
  for (let i = 0; !receipt; i++) {
    receipt = await rpc('eth_getTransactionReceipt', [deploy]);
    if (!receipt && i > 200) throw new Error('the token contract was not mined');
    if (!receipt) await new Promise((r) => setTimeout(r, 10));
  }
  const token = receipt.contractAddress;
  const word = (v) => (typeof v === 'string' ? v.slice(2) : v.toString(16)).padStart(64, '0');
  const height = async () => Number.parseInt(await rpc('eth_blockNumber'), 16);
  for (let i = 0; i < transactions; i++) {
    const from = accounts[i % accounts.length];
    const to = accounts[(i + 3) % accounts.length];
    if (i % 2 === 0) await rpc('eth_sendTransaction', [{ from, to, value: `0x${(BigInt(i + 1) * 10n ** 15n).toString(16)}` }]);
    else await rpc('eth_sendTransaction', [{ from, to: token, data: `0x${word(to)}${word(BigInt(i) * 1000n + 7n)}` }]);
    const target = Math.floor(((i + 1) * (blocks - 1)) / transactions);
    const head = await height();
    if (target > head) await rpc('anvil_mine', [`0x${(target - head).toString(16)}`]);
  }
  const head = await height();
  if (head < blocks - 1) await rpc('anvil_mine', [`0x${(blocks - 1 - head).toString(16)}`]);
  return token;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [url = 'http://127.0.0.1:8545', blocks = '12000', transactions = '200'] = process.argv.slice(2);
  const token = await generateTraffic(rpcClient(url), Number(blocks), Number(transactions));
  console.log(`token ${token}; chain head ${Number.parseInt(await rpcClient(url)('eth_blockNumber'), 16)}`);
}
