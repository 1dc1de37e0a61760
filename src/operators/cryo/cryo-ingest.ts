import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import type { EmittedEvent, OutputRef } from '../../dispatcher/core/task-payload';
import { lit, openLockedDuckDb } from '../duckdb/locked-duckdb';
import { parseRangeKey, rangeKey, type BuiltinOperator, type OperatorContext } from '../operator';
import { parseCryoConfig, type CryoIngestConfig } from './cryo-config';
import { JsonRpcClient } from './json-rpc';
import { assertOutputLocation } from '../input-files';
import { LAST_BLOCK_HASH_KEY, writeCryoParquet } from './parquet-writer';
import { blockRow, logRow, num, transactionRow, type CryoValue, type Datatype, type RpcBlock, type RpcLog, type RpcReceipt, type RpcTransaction } from './schemas';

/** How long before its deadline a following run stops, so it completes in time. */
const DEADLINE_MARGIN_MS = 30_000;

interface Range {
  start: number;
  end: number;
}

interface Chunk extends Range {
  rows: Record<Datatype, CryoValue[][]>;
  /** Hash of the chunk's first block's parent, and of its last block: how chunks chain. */
  parentHash: string;
  lastHash: string;
}

/** The endpoint: config.rpc_url or the slot's RPC_URL; the slot's RPC_API_KEY goes into `{RPC_API_KEY}` in the URL, or a bearer header. */
export function rpcEndpoint(config: CryoIngestConfig, env: Readonly<Record<string, string>>): { url: string; headers: Record<string, string> } {
  const url = config.rpc_url ?? env.RPC_URL;
  if (!url) throw new Error('config.rpc_url: no RPC endpoint: set rpc_url, or run the job in a worker_pool whose slots set RPC_URL');
  const key = env.RPC_API_KEY;
  if (!key) return { url, headers: {} };
  if (url.includes('{RPC_API_KEY}')) return { url: url.replace('{RPC_API_KEY}', encodeURIComponent(key)), headers: {} };
  return { url, headers: { authorization: `Bearer ${key}` } };
}

/**
 * cryo_ingest (docs/architecture/operators/cryo_ingest.md): reads blocks, transactions and logs
 * over JSON-RPC and writes them as cryo-compatible Parquet, one file per datatype per block range
 * (`{start}_{end}.parquet`, end inclusive, ranges aligned to `start_block + k × chunk_size`),
 * `confirmations` blocks behind the head. Each file is put whole, then one range event per output
 * is emitted, carrying the range's last block hash as its cursor. A run resumes after the last
 * range present in every output; a range whose blocks no longer chain to the canonical chain (a
 * reorg) is re-ingested in place (`replace`) and announced with an invalidation and a new data event.
 */
export const cryoIngest: BuiltinOperator = async (ctx) => {
  const { config, violations } = parseCryoConfig(ctx.payload.job.config, ctx.payload.outputs.length);
  if (violations.length) throw new Error(violations.map((v) => `config.${v.field}: ${v.reason}`).join('; '));
  for (const o of ctx.payload.outputs) {
    if (o.backend !== 's3' || !o.location) throw new Error(`output ${o.index}: cryo_ingest writes Parquet files: the output needs backend s3 and a current dataset version`);
    assertOutputLocation(o, ctx.payload.org_id, 'cryo_ingest');
  }
  const { url, headers } = rpcEndpoint(config, ctx.env);
  const rpc = new JsonRpcClient(url, { batchSize: config.batch_size, requestsPerSecond: config.requests_per_second, retries: config.max_retries, timeoutMs: 30_000, signal: ctx.signal }, headers);
  const chainId = BigInt(await rpc.call<string>('eth_chainId', []));
  const duck = await openLockedDuckDb({ threads: 1, memoryLimit: '1GB', allowedDirectories: [ctx.scratchDir] });
  try {
    await new Ingest(ctx, config, rpc, duck.conn, chainId).run();
  } finally {
    duck.close();
    ctx.log('rpc usage', { ...rpc.stats });
  }
};

class Ingest {
  /** Ranges written (in this run or before it), oldest first, with their last block hash when known. */
  private readonly written: (Range & { lastHash?: string })[] = [];
  private fileSeq = 0;

  constructor(
    private readonly ctx: OperatorContext,
    private readonly config: CryoIngestConfig,
    private readonly rpc: JsonRpcClient,
    private readonly conn: DuckDBConnection,
    private readonly chainId: bigint,
  ) {}

  private get outputs(): OutputRef[] {
    return this.ctx.payload.outputs;
  }

  async run(): Promise<void> {
    await this.resume();
    const deadline = new Date(this.ctx.payload.deadline_at).getTime() - DEADLINE_MARGIN_MS;
    for (;;) {
      this.ctx.signal.throwIfAborted();
      const head = num(await this.rpc.call<string>('eth_blockNumber', []));
      const safe = head - this.config.confirmations;
      let progressed = false;
      // The next range is read while this one is written: reading (the RPC endpoint) and writing
      // (DuckDB, the store) overlap, one range ahead.
      let ahead: { range: Range; chunk: Promise<Chunk> } | undefined;
      for (;;) {
        this.ctx.signal.throwIfAborted();
        const next = this.nextRange();
        if (!next || next.end > safe) break;
        const chunk = await (ahead && ahead.range.start === next.start && ahead.range.end === next.end ? ahead.chunk : this.fetch(next));
        ahead = undefined;
        const previous = this.written.at(-1);
        if (previous?.lastHash && previous.end + 1 === chunk.start && chunk.parentHash !== previous.lastHash) {
          await this.reorg(safe);
          continue;
        }
        const following = this.nextRangeFrom(chunk.end + 1);
        if (following && following.end <= safe && Date.now() <= deadline) {
          ahead = { range: following, chunk: this.fetch(following) };
          ahead.chunk.catch(() => undefined); // awaited (and its error thrown) on the next turn, if still wanted
        }
        await this.write(chunk, false);
        progressed = true;
        if (Date.now() > deadline) return;
      }
      if (!this.config.follow_head || !this.nextRange() || Date.now() > deadline) {
        // Before finishing, check the tip once more: a reorg of the ranges already written is
        // re-ingested now rather than left for the next run.
        if (this.written.length) await this.verifyTip(safe);
        return;
      }
      if (!progressed) await sleep(this.config.poll_interval_ms, this.ctx.signal);
    }
  }

  /** The next range to ingest, or undefined past end_block. */
  private nextRange(): Range | undefined {
    return this.nextRangeFrom(this.written.length ? this.written.at(-1)!.end + 1 : this.config.start_block);
  }

  /**
   * Ranges present in every output, contiguous from start_block, are done. The newest one's
   * events are emitted again: a run that crashed after writing a range and before its events
   * were accepted must not lose them (a duplicate of an accepted event is dropped by its key).
   */
  private async resume(): Promise<void> {
    const sets = await Promise.all(this.outputs.map(async (o) => new Set((await this.ctx.store.list(o.location!)).map((k) => parseRangeKey(k)).filter((r) => r).map((r) => `${r!.start}_${r!.end}`))));
    let next = this.config.start_block;
    for (;;) {
      const candidate = this.nextRangeFrom(next);
      if (!candidate || !sets.every((s) => s.has(`${candidate.start}_${candidate.end}`))) break;
      this.written.push(candidate);
      next = candidate.end + 1;
    }
    const last = this.written.at(-1);
    if (!last) return;
    last.lastHash = await this.storedLastHash(last);
    this.ctx.log('resuming', { after_block: last.end, ranges_present: this.written.length });
    // Only a range the chain still has is announced again; one it no longer has is re-ingested or
    // retracted by the reorg check before the run ends.
    const tip = await this.rpc.call<RpcBlock | null>('eth_getBlockByNumber', [hex(last.end), false]);
    if (tip?.hash !== last.lastHash) return;
    const events = this.outputs.map((o) => this.event(o.index, 'data', last, last.lastHash));
    await this.ctx.emit(events);
  }

  private nextRangeFrom(start: number): Range | undefined {
    const { start_block, chunk_size, end_block } = this.config;
    if (end_block !== undefined && start > end_block) return undefined;
    const k = Math.floor((start - start_block) / chunk_size);
    const end = start_block + (k + 1) * chunk_size - 1;
    return { start, end: end_block === undefined ? end : Math.min(end, end_block) };
  }

  /**
   * The last block hash of a written range, as it was when the range was written: from its first
   * output's file metadata, else (a file written before the metadata existed) its blocks file's
   * last row, else undefined — then the range is taken as changed and read again, which is safe.
   */
  private async storedLastHash(range: Range): Promise<string | undefined> {
    const bytes = await this.ctx.store.get(rangeKey(this.outputs[0]!.location!, range.start, range.end));
    if (!bytes) return undefined;
    const path = join(this.ctx.scratchDir, `read-${this.fileSeq++}.parquet`);
    await writeFile(path, bytes);
    const kv = await this.conn.runAndReadAll(`SELECT value::VARCHAR AS h FROM parquet_kv_metadata(${lit(path)}) WHERE key::VARCHAR = ${lit(LAST_BLOCK_HASH_KEY)}`);
    const fromMetadata = kv.getRowObjectsJS()[0]?.h;
    if (typeof fromMetadata === 'string') return fromMetadata;
    if (this.config.datatypes[0] === 'blocks') {
      const r = await this.conn.runAndReadAll(`SELECT '0x' || lower(hex(block_hash)) AS h FROM read_parquet(${lit(path)}) WHERE block_number = ${range.end}`);
      const h = r.getRowObjectsJS()[0]?.h;
      if (typeof h === 'string') return h;
    }
    return undefined;
  }

  /**
   * The chain no longer extends what was written: find the newest written range whose last block
   * is still canonical (then every block before it is too), and re-ingest everything after it.
   */
  private async reorg(safe: number): Promise<void> {
    let keep = this.written.length;
    while (keep > 0) {
      const r = this.written[keep - 1]!;
      const block = await this.rpc.call<RpcBlock | null>('eth_getBlockByNumber', [hex(r.end), false]);
      const stored = r.lastHash ?? (await this.storedLastHash(r));
      if (block && block.hash === stored) break;
      keep--;
    }
    const replaced = this.written.splice(keep);
    this.ctx.log('reorg: re-ingesting ranges', { ranges: replaced.map((r) => `${r.start}_${r.end}`) });
    for (const r of replaced) {
      if (r.end > safe) {
        // Not confirmed on the new chain (it may be shorter than what was written): retracted until
        // it is. The main loop ingests it again once it is confirmed.
        await this.retract(r);
        continue;
      }
      const chunk = await this.fetch(r);
      await this.write(chunk, true);
    }
  }

  /**
   * Removes a range from the current version of every output and announces it with an
   * invalidation that names no revision (a retraction, ADR 0022): its files are deleted first, so
   * a consumer that re-derives the range from its input finds it gone.
   */
  private async retract(range: Range): Promise<void> {
    for (const o of this.outputs) await this.ctx.store.delete(rangeKey(o.location!, range.start, range.end));
    this.ctx.log('range retracted', { start: range.start, end: range.end });
    await this.ctx.emit(this.outputs.map((o) => this.event(o.index, 'invalidation', range, undefined)));
  }

  /** After the last range of a run: is its last block still canonical? If not, re-ingest. */
  private async verifyTip(safe: number): Promise<void> {
    const last = this.written.at(-1)!;
    const block = await this.rpc.call<RpcBlock | null>('eth_getBlockByNumber', [hex(last.end), false]);
    if (block && block.hash === last.lastHash) return;
    await this.reorg(safe);
  }

  /** Reads a range; when the chain moves under the read, waits a moment and reads it again. */
  private async fetch(range: Range): Promise<Chunk> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.fetchOnce(range);
      } catch (err) {
        if (!(err instanceof ChainMoved) || attempt >= 5) throw err;
        this.ctx.log('chain moved during a read; reading the range again', { start: range.start, end: range.end, reason: err.message });
        await sleep(Math.min(this.config.poll_interval_ms, 1000), this.ctx.signal);
      }
    }
  }

  private async fetchOnce(range: Range): Promise<Chunk> {
    const wants = new Set(this.config.datatypes);
    const numbers = Array.from({ length: range.end - range.start + 1 }, (_, i) => range.start + i);
    const full = wants.has('transactions');
    const [blocks, receipts, logs] = await Promise.all([
      this.rpc.batch<RpcBlock | null>(numbers.map((n) => ({ method: 'eth_getBlockByNumber', params: [hex(n), full] }))),
      full ? this.rpc.batch<RpcReceipt[] | null>(numbers.map((n) => ({ method: 'eth_getBlockReceipts', params: [hex(n)] }))) : Promise.resolve([]),
      wants.has('logs') ? this.rpc.call<RpcLog[]>('eth_getLogs', [{ fromBlock: hex(range.start), toBlock: hex(range.end) }]) : Promise.resolve([]),
    ]);
    blocks.forEach((b, i) => {
      if (!b) throw new Error(`block ${numbers[i]} is not available from the RPC endpoint`);
    });
    const byHash = new Map<string, number>(blocks.map((b) => [b!.hash, num(b!.number)]));
    // One consistent view of the range: every block chains to the previous one, and every log and
    // receipt belongs to one of these blocks. Anything else means the chain moved while we read.
    for (let i = 1; i < blocks.length; i++) {
      if (blocks[i]!.parentHash !== blocks[i - 1]!.hash) throw new ChainMoved(`block ${numbers[i]} does not extend block ${numbers[i - 1]}`);
    }
    const rows: Record<Datatype, CryoValue[][]> = { blocks: [], transactions: [], logs: [] };
    if (wants.has('blocks')) rows.blocks = blocks.map((b) => blockRow(b!, this.chainId));
    if (full) {
      blocks.forEach((b, i) => {
        const rs = new Map((receipts[i] ?? []).map((r) => [r.transactionHash, r]));
        for (const t of b!.transactions as RpcTransaction[]) {
          const receipt = rs.get(t.hash);
          if (!receipt) throw new ChainMoved(`no receipt for transaction ${t.hash} in block ${numbers[i]}`);
          rows.transactions.push(transactionRow(t, receipt, this.chainId));
        }
      });
    }
    for (const l of logs) {
      if (l.removed) continue;
      if (byHash.get(l.blockHash) === undefined) throw new ChainMoved(`log ${l.logIndex} of block ${num(l.blockNumber)} is from a block no longer in the range`);
      rows.logs.push(logRow(l, this.chainId));
    }
    return { ...range, rows, parentHash: blocks[0]!.parentHash, lastHash: blocks.at(-1)!.hash };
  }

  /** Writes every datatype of the chunk (each file put whole), then emits its events; a replaced range is invalidated first. */
  private async write(chunk: Chunk, replaced: boolean): Promise<void> {
    for (const [i, datatype] of this.config.datatypes.entries()) {
      const path = join(this.ctx.scratchDir, `${datatype}-${this.fileSeq++}.parquet`);
      await writeCryoParquet(this.conn, datatype, chunk.rows[datatype], path, chunk.lastHash);
      await this.ctx.store.putFile(rangeKey(this.outputs[i]!.location!, chunk.start, chunk.end), path);
    }
    const events: EmittedEvent[] = [];
    for (const [i, datatype] of this.config.datatypes.entries()) {
      if (replaced) events.push(this.event(i, 'invalidation', chunk, chunk.lastHash));
      events.push(this.event(i, 'data', chunk, chunk.lastHash));
      this.ctx.log('range written', { datatype, start: chunk.start, end: chunk.end, rows: chunk.rows[datatype].length });
    }
    await this.ctx.emit(events);
    this.written.push({ start: chunk.start, end: chunk.end, lastHash: chunk.lastHash });
  }

  private event(output: number, kind: 'data' | 'invalidation', range: Range, lastHash: string | undefined): EmittedEvent {
    const key = rangeKey(this.outputs[output]!.location!, range.start, range.end);
    return { output, kind, start: range.start, end: range.end, ...(lastHash ? { cursor: lastHash } : {}), payload: { key } };
  }
}

/** The chain changed under a read: the chunk is read again (a transient error for the caller's retry). */
class ChainMoved extends Error {
  constructor(message: string) {
    super(`the chain changed while reading: ${message}`);
  }
}

const hex = (n: number) => `0x${n.toString(16)}`;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason as Error)), { once: true });
  });
