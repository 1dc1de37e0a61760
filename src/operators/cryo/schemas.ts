/**
 * cryo's default columns and types for the datasets cryo_ingest writes, in cryo's file order
 * (cryo 0.3: the struct field order, `chain_id` last; binary columns as raw bytes, U256 values as
 * `_binary`, `_string` and `_f64`). A Parquet file we write reads like one `cryo` would have
 * written for the same blocks. docs/architecture/operators/cryo_ingest.md lists them.
 */
export type CryoType = 'BLOB' | 'UINTEGER' | 'UBIGINT' | 'VARCHAR' | 'DOUBLE' | 'BOOLEAN';

export interface CryoColumn {
  name: string;
  type: CryoType;
}

export type Datatype = 'blocks' | 'transactions' | 'logs';
export const DATATYPES: readonly Datatype[] = ['blocks', 'transactions', 'logs'];

const cols = (spec: string): CryoColumn[] =>
  spec
    .trim()
    .split(/\s*,\s*/)
    .map((c) => {
      const [name, type] = c.split(/\s+/);
      return { name: name!, type: type as CryoType };
    });

export const SCHEMAS: Record<Datatype, { columns: CryoColumn[]; sort: string[] }> = {
  blocks: {
    columns: cols(`block_hash BLOB, author BLOB, block_number UINTEGER, gas_used UBIGINT, extra_data BLOB, timestamp UINTEGER,
      base_fee_per_gas UBIGINT, chain_id UBIGINT`),
    sort: ['block_number'],
  },
  transactions: {
    columns: cols(`block_number UINTEGER, transaction_index UBIGINT, transaction_hash BLOB, nonce UBIGINT, from_address BLOB,
      to_address BLOB, value_binary BLOB, value_string VARCHAR, value_f64 DOUBLE, input BLOB, gas_limit UBIGINT, gas_used UBIGINT,
      gas_price UBIGINT, transaction_type UINTEGER, max_priority_fee_per_gas UBIGINT, max_fee_per_gas UBIGINT, success BOOLEAN,
      n_input_bytes UINTEGER, n_input_zero_bytes UINTEGER, n_input_nonzero_bytes UINTEGER, chain_id UBIGINT`),
    sort: ['block_number', 'transaction_index'],
  },
  logs: {
    columns: cols(`block_number UINTEGER, transaction_index UINTEGER, log_index UINTEGER, transaction_hash BLOB, address BLOB,
      topic0 BLOB, topic1 BLOB, topic2 BLOB, topic3 BLOB, data BLOB, chain_id UBIGINT`),
    sort: ['block_number', 'log_index'],
  },
};

/** A value for one column: bytes, a number (UINTEGER, DOUBLE), a bigint (UBIGINT), text, a flag, or null. */
export type CryoValue = Uint8Array | number | bigint | string | boolean | null;

// ------------------------------------------------------------------ JSON-RPC → cryo rows

export interface RpcBlock {
  number: string;
  hash: string;
  parentHash: string;
  miner: string;
  gasUsed: string;
  extraData: string;
  timestamp: string;
  baseFeePerGas?: string | null;
  transactions: (RpcTransaction | string)[];
}

export interface RpcTransaction {
  hash: string;
  blockNumber: string;
  transactionIndex: string;
  nonce: string;
  from: string;
  to: string | null;
  value: string;
  input: string;
  gas: string;
  gasPrice?: string | null;
  type?: string | null;
  maxPriorityFeePerGas?: string | null;
  maxFeePerGas?: string | null;
}

export interface RpcReceipt {
  transactionHash: string;
  gasUsed: string;
  status?: string | null;
}

export interface RpcLog {
  blockNumber: string;
  blockHash: string;
  transactionIndex: string;
  logIndex: string;
  transactionHash: string;
  address: string;
  topics: string[];
  data: string;
  removed?: boolean;
}

export const bytes = (hex: string): Uint8Array => Buffer.from(hex.startsWith('0x') ? hex.slice(2) : hex, 'hex');
export const num = (hex: string): number => Number.parseInt(hex, 16);
export const big = (hex: string): bigint => BigInt(hex);
const optBig = (hex: string | null | undefined): bigint | null => (hex === null || hex === undefined ? null : BigInt(hex));

export function blockRow(b: RpcBlock, chainId: bigint): CryoValue[] {
  return [bytes(b.hash), bytes(b.miner), num(b.number), big(b.gasUsed), bytes(b.extraData), num(b.timestamp), optBig(b.baseFeePerGas), chainId];
}

export function transactionRow(t: RpcTransaction, receipt: RpcReceipt, chainId: bigint): CryoValue[] {
  const input = bytes(t.input);
  const zeros = input.reduce((n, byte) => n + (byte === 0 ? 1 : 0), 0);
  const value = BigInt(t.value);
  return [
    num(t.blockNumber),
    big(t.transactionIndex),
    bytes(t.hash),
    big(t.nonce),
    bytes(t.from),
    t.to ? bytes(t.to) : null,
    bytes(value.toString(16).padStart(64, '0')),
    value.toString(10),
    Number(value.toString(10)),
    input,
    big(t.gas),
    big(receipt.gasUsed),
    optBig(t.gasPrice),
    t.type ? num(t.type) : 0,
    optBig(t.maxPriorityFeePerGas),
    optBig(t.maxFeePerGas),
    receipt.status ? num(receipt.status) === 1 : true,
    input.length,
    zeros,
    input.length - zeros,
    chainId,
  ];
}

export function logRow(l: RpcLog, chainId: bigint): CryoValue[] {
  const topic = (i: number) => (l.topics[i] ? bytes(l.topics[i]!) : null);
  return [num(l.blockNumber), num(l.transactionIndex), num(l.logIndex), bytes(l.transactionHash), bytes(l.address), topic(0), topic(1), topic(2), topic(3), bytes(l.data), chainId];
}
