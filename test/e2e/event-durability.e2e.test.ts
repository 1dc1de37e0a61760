import { mkdtempSync, readFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { EmbeddedPostgres } from '../../src/common/db/embedded-postgres';
import { JsonLogger } from '../../src/common/logging/json-logger';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { startTrace, type TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';

const TOKEN = 'trc_durability-test-dev-token-00000';
const DAG = `name: durable
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    outputs: [{backend: s3, update_strategy: replace}]
  - name: reader
    operator: user
    language: javascript
    entry_point: consumer.js
    inputs: [{from: {job: source}}]
    outputs: [{backend: s3, update_strategy: replace}]
`;

/** Kills the server the way a power cut would to its processes: SIGQUIT, no shutdown checkpoint, WAL buffers lost. */
async function crash(clusterDir: string): Promise<void> {
  const pid = Number(readFileSync(join(clusterDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  process.kill(pid, 'SIGQUIT');
  await waitFor(() => {
    try {
      process.kill(pid, 0);
      return undefined;
    } catch {
      return true;
    }
  }, 'Postgres to exit');
}

/**
 * ADR 0019: an events statement that answers a waiting claim commits without waiting for its WAL
 * to reach disk, so the worker has its attempt sooner — but the producer is told its events are
 * accepted only once they are durable. The server is crashed the moment the producer has its
 * answer, and restarted: the events, and the task the claim was given, are there. The WAL writer
 * is told to flush at most every 10 s, so only the dispatcher's own flush can have made them
 * durable in time (without it, this test loses the event).
 */
describe('events acknowledged to their producer survive a crash of Postgres', () => {
  let trace: TraceProcess | undefined;
  let server: EmbeddedPostgres;
  let dataDir: string;
  const options = { osUser: 'postgres', logger: new JsonLogger('error', () => undefined), settings: { wal_writer_delay: '10000ms' } };

  afterAll(async () => {
    await trace?.stop('SIGKILL');
    await server?.stop();
  });

  it('a served claim does not wait for the events to reach disk; the producer does', async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'trace-durability-'));
    await chmod(dataDir, 0o755);
    server = new EmbeddedPostgres({ dataDir, ...options });
    const target = await server.start();
    const databaseUrl = `postgresql://${target.username}@localhost/${target.database}?host=${encodeURIComponent(target.host)}`;
    trace = await startTrace({
      args: ['--role', 'registry,dispatcher'],
      env: { DATABASE_URL: databaseUrl, TRACE_DEV_TOKEN: TOKEN, TRACE_BOOTSTRAP_DEV_ORG: 'true', TRACE_DATA_DIR: dataDir, TRACE_CODE_ROOT: join(__dirname, '..', 'fixtures', 'code') },
    });
    const url = trace.baseUrl;
    const platform = readFileSync(join(dataDir, 'internal-token'), 'utf8').trim();
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG)).status).toBe(201);

    // A producer: a source run whose attempt token the test holds.
    const source = (await call(url, 'POST', '/v1/dags/durable/jobs/source/runs', { token: TOKEN })).body.task_id as string;
    const producer = await waitFor(async () => {
      const res = await call(url, 'GET', `/internal/task-fetch?task_id=${source}`, { token: platform });
      return res.status === 200 ? (res.body.attempt_token as string) : undefined;
    }, 'the source run to start');

    // The WAL writer flushes now, and then (wal_writer_delay) not again for 10 s.
    const db = new Client({ host: target.host, port: target.port, user: target.username, database: target.database });
    await db.connect();
    await db.query(`SET synchronous_commit = off`);
    await db.query(`SELECT pg_current_xact_id()`);
    await db.end();
    await new Promise((r) => setTimeout(r, 200));

    // A worker waits in a long poll; the event is posted; the statement that stores it answers the poll.
    const claim = call(url, 'POST', '/internal/task-claim', { token: platform, body: { max: 1, wait_ms: 20_000 } });
    await new Promise((r) => setTimeout(r, 300));
    const posted = await call(url, 'POST', '/internal/events', { token: producer, body: { events: [{ output: 0, partition_key: 'p-1' }] } });
    expect(posted.body).toEqual({ accepted: 1, duplicates: 0 });
    await crash(target.host);
    const served = (await claim).body.tasks as { task_id: string; input: { event: { partition_key: string } } }[];
    expect(served.map((t) => t.input.event.partition_key)).toEqual(['p-1']);
    await trace.stop('SIGKILL');
    trace = undefined;

    // Crash recovery: what was acknowledged is there, with the task it created.
    server = new EmbeddedPostgres({ dataDir, ...options });
    await server.start();
    const after = new Client({ host: target.host, port: target.port, user: target.username, database: target.database });
    await after.connect();
    try {
      const { rows } = await after.query(
        `SELECT e.partition_key, t.id AS task_id FROM events e JOIN tasks t ON t.event_id = e.id WHERE e.producer_task_id = $1`,
        [source],
      );
      expect(rows).toEqual([{ partition_key: 'p-1', task_id: served[0]!.task_id }]);
    } finally {
      await after.end();
    }
  });
});
