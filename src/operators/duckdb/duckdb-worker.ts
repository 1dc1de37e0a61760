/**
 * A built-in operator's DuckDB, in a process of its own (ADR 0020): SQL from a DAG is user code,
 * and DuckDB's `memory_limit` does not bound everything a query allocates (a `list()` aggregate
 * goes past it), so the process runs under an address-space limit set by its parent and a query
 * that needs more fails here instead of taking the wrapper, and every tenant's task in it, down.
 * It reads no environment and touches nothing but the scratch directory it is given.
 */
import { StatementType } from '@duckdb/node-api';
import { lit, openLockedDuckDb } from './locked-duckdb';
import type { DuckDbJob, DuckDbReply } from './duckdb-process-protocol';

async function run(job: DuckDbJob): Promise<DuckDbReply> {
  const duck = await openLockedDuckDb({ threads: job.threads, memoryLimit: job.memoryLimit, allowedDirectories: [job.scratchDir] });
  try {
    for (const statement of job.setup) await duck.conn.run(statement);
    if (job.userSql) {
      const statements = await duck.conn.extractStatements(job.select);
      if (statements.count !== 1) throw new Error(`config.sql: must be exactly one statement, got ${statements.count}`);
      const prepared = await statements.prepare(0);
      if (prepared.statementType !== StatementType.SELECT) throw new Error('config.sql: must be a SELECT statement');
    }
    // No trailing `;`, and a newline so that a trailing `--` comment cannot swallow what wraps it.
    const select = `${job.select.trim().replace(/;(\s*--[^\n]*)*\s*$/, '')}\n`;
    if (job.output.kind === 'copy') {
      await duck.conn.run(`COPY (${select}) TO ${lit(job.output.path)} (${job.output.options})`);
      return { kind: 'done' };
    }
    const result = await duck.conn.runAndReadAll(`SELECT * FROM (${select}\n) LIMIT ${job.output.maxRows + 1}`);
    if (result.currentRowCount > job.output.maxRows) throw new Error(`sql: the SELECT returned more than ${job.output.maxRows} rows for one range; a Postgres output takes at most that many per task`);
    const types = result.columnTypes();
    return {
      kind: 'done',
      rows: { columns: result.columnNames().map((name, i) => ({ name, type: types[i]!.toString() })), rows: result.getRowObjectsJS() as Record<string, unknown>[] },
    };
  } finally {
    duck.close();
  }
}

process.on('disconnect', () => process.exit(0));
process.once('message', (job: DuckDbJob) => {
  run(job).then(
    (answer) => process.send!(answer, () => process.exit(0)),
    (err: unknown) => {
      const message = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 2000);
      process.send!({ kind: 'failed', message, memory: /^Out of Memory Error/i.test(message) || err instanceof RangeError } satisfies DuckDbReply, () => process.exit(0));
    },
  );
});
