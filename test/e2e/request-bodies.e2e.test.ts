import { MAX_BODY_DEPTH } from '../../src/common/http/json-depth';
import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';
import { waitFor } from '../support/wait-for';
import { join } from 'node:path';

const TOKEN = 'trc_request-bodies-dev-token-000000';
const PLATFORM = 'cmVxdWVzdC1ib2RpZXMtcGxhdGZvcm0tY3JlZGVudGlhbA==';
const DAG = `name: bodies
jobs:
  - name: source
    operator: user
    language: javascript
    entry_point: emit-source.js
    timeout: 1h
    outputs: [{backend: s3, update_strategy: replace}]
`;

/** `n` arrays inside each other: `[[[...]]]`. */
const arrays = (n: number) => '['.repeat(n) + ']'.repeat(n);
/** About 10 KB, ~5,000 levels: the DAG spec. */
const DEEP = arrays(5_000);
/** Just under the 1 MB body limit, all of it nesting. */
const HUGE = arrays(500_000);

/**
 * Every JSON body is refused with a 400 naming the nesting limit before anything walks it (Express's
 * parser and the hot internal routes that parse their own bodies alike), and text that is not
 * UTF-8 is refused rather than decoded with replacement characters. Nothing answers 500.
 */
describe('request bodies: nesting depth and UTF-8, on every route', () => {
  let trace: TraceProcess;
  let url: string;
  let attempt: string;

  const expectTooDeep = (res: Awaited<ReturnType<typeof call>>, what: string) => {
    expect({ what, status: res.status, code: res.body?.error?.code }).toEqual({ what, status: 400, code: 'body_too_deep' });
    expect(res.body.error.message).toContain(`more than ${MAX_BODY_DEPTH} levels deep`);
    expect(res.body.error.details).toEqual({ limit: MAX_BODY_DEPTH, offset: expect.any(Number) });
  };
  /** The hot routes answer on their own path and, with a query string, through the framework: both are checked. */
  const bothPaths = (path: string) => [path, `${path}?via=framework`];

  beforeAll(async () => {
    trace = await startTrace({
      args: ['--role', 'registry,dispatcher,query'],
      env: {
        DATABASE_URL: await createTestDatabase('bodies'),
        TRACE_DEV_TOKEN: TOKEN,
        TRACE_BOOTSTRAP_DEV_ORG: 'true',
        TRACE_INTERNAL_TOKEN: PLATFORM,
        TRACE_CODE_ROOT: join(__dirname, '..', 'fixtures', 'code'),
        TRACE_DISPATCH_POLL_MS: '100',
      },
    });
    url = trace.baseUrl;
    expect((await postYaml(url, '/v1/dags', TOKEN, DAG)).status).toBe(201);
    // No wrapper runs in this process: the test holds the attempt token itself.
    const taskId = (await call(url, 'POST', '/v1/dags/bodies/jobs/source/runs', { token: TOKEN })).body.task_id as string;
    await waitFor(async () => ((await call(url, 'GET', `/v1/tasks/${taskId}`, { token: TOKEN })).body.status === 'running' ? true : undefined), 'the source run to start', 30_000);
    const fetched = await call(url, 'GET', `/internal/task-fetch?task_id=${taskId}`, { token: PLATFORM });
    expect(fetched.status).toBe(200);
    attempt = fetched.body.attempt_token;
  });
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it('a DAG spec nested ~5,000 levels deep is a 400: as JSON (body_too_deep), as YAML (invalid_dag_spec naming the limit)', async () => {
    const json = `{"name":"deep","jobs":${DEEP}}`;
    for (const path of ['/v1/dags', '/v1/dags/validate']) {
      expectTooDeep(await call(url, 'POST', path, { token: TOKEN, rawBody: json }), `${path} json`);
      expectTooDeep(await call(url, 'POST', path, { token: TOKEN, rawBody: `{"name":"deep","jobs":[{"name":"a","config":${HUGE}}]}` }), `${path} 1 MB json`);
      for (const yaml of [`name: deep\njobs: ${DEEP}\n`, json, `name: deep\njobs:\n${'- '.repeat(5_000)}x\n`]) {
        const res = await postYaml(url, path, TOKEN, yaml);
        expect({ path, status: res.status, code: res.body.error.code }).toEqual({ path, status: 400, code: 'invalid_dag_spec' });
        expect(res.body.error.details).toEqual([expect.objectContaining({ path: '', reason: `spec nests lists and mappings more than ${MAX_BODY_DEPTH} levels deep; the limit is ${MAX_BODY_DEPTH}` })]);
      }
    }
    // A spec whose config nests one level too deep is refused as YAML too, with its position.
    const line5 = '    config: {datatypes: [blocks], x: ';
    const config = (levels: number) => `name: deep\njobs:\n  - name: a\n    operator: cryo_ingest\n${line5}${arrays(levels)}}\n    outputs: [{backend: s3, update_strategy: replace}]\n`;
    // Top-level mapping (1), jobs (2), the job (3), config (4), then x's arrays: at the limit, only
    // the unknown field is reported; one level more, the depth, at the array that is too deep.
    expect((await postYaml(url, '/v1/dags/validate', TOKEN, config(MAX_BODY_DEPTH - 4))).body.error.details).toEqual([expect.objectContaining({ path: 'jobs[0].config.x', reason: expect.stringContaining('unknown field') })]);
    const tooDeep = await postYaml(url, '/v1/dags/validate', TOKEN, config(MAX_BODY_DEPTH - 3));
    expect(tooDeep.body.error.details).toEqual([{ path: '', reason: expect.stringContaining(`more than ${MAX_BODY_DEPTH} levels deep`), line: 5, column: line5.length + 1 + (MAX_BODY_DEPTH - 4) }]);
    // A form body (the framework's other parser) nested deeply is a 400 of that parser's own.
    const form = await call(url, 'POST', '/v1/dags', { token: TOKEN, rawBody: `a${'[b]'.repeat(5_000)}=1`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect([form.status, form.body.error.code]).toEqual([400, 'bad_request']);
    expect((await call(url, 'GET', '/v1/dags/deep', { token: TOKEN })).status).toBe(404);
  });

  it('POST /v1/query with deeply nested params is a 400', async () => {
    expectTooDeep(await call(url, 'POST', '/v1/query', { token: TOKEN, rawBody: `{"sql":"SELECT 1","params":[${DEEP}]}` }), 'query');
    expectTooDeep(await call(url, 'POST', '/v1/query', { token: TOKEN, rawBody: `{"sql":"SELECT 1","params":${HUGE}}` }), 'query 1 MB');
  });

  it('the internal routes refuse deep bodies on both paths, authenticated or not, before reading them', async () => {
    const cases: [string, string, string, string][] = [
      ['POST', '/internal/task-fetch-batch', PLATFORM, `{"task_ids":${HUGE}}`],
      ['POST', '/internal/task-claim', PLATFORM, `{"max":1,"x":${HUGE}}`],
      ['POST', '/internal/task-complete-batch', PLATFORM, `{"completions":${HUGE}}`],
      ['POST', '/internal/events', attempt, `{"events":[{"output":0,"partition_key":"p","payload":{"a":${HUGE}}}]}`],
      ['POST', '/internal/events', attempt, `{"events":${DEEP}}`],
      ['POST', '/internal/task-complete', attempt, `{"status":"succeeded","events":${HUGE}}`],
      ['POST', '/internal/task-complete', attempt, `{"status":"succeeded","error":"x","events":[{"output":0,"partition_key":"p","payload":{"a":${DEEP}}}]}`],
      ['PUT', '/internal/operator-state', attempt, `{"expected_version":0,"state":${HUGE}}`],
    ];
    for (const [method, route, credential, body] of cases) {
      for (const path of method === 'POST' ? bothPaths(route) : [route]) {
        expectTooDeep(await call(url, method, path, { token: credential, rawBody: body }), `${method} ${path}`);
        // The body is refused before the credential is looked at, as for malformed JSON.
        expectTooDeep(await call(url, method, path, { token: 'tra_forged', rawBody: body }), `${method} ${path} (forged token)`);
      }
    }
    // None of it reached the attempt: it is still running.
    const task = (await call(url, 'GET', '/v1/tasks?dag=bodies', { token: TOKEN })).body[0];
    expect(task.status).toBe('running');
  });

  it('exactly the limit is accepted, one level more is not, on both paths', async () => {
    // The body (1), events (2), the event (3), its payload (4), then arrays inside the payload.
    const event = (levels: number, key: string) => `{"events":[{"output":0,"partition_key":"${key}","payload":{"a":${arrays(levels)}}}]}`;
    for (const path of bothPaths('/internal/events')) {
      const atLimit = await call(url, 'POST', path, { token: attempt, rawBody: event(MAX_BODY_DEPTH - 4, `at-limit${path.length}`) });
      expect({ path, status: atLimit.status, body: atLimit.body }).toEqual({ path, status: 200, body: { accepted: 1, duplicates: 0 } });
      const over = await call(url, 'POST', path, { token: attempt, rawBody: event(MAX_BODY_DEPTH - 3, `over${path.length}`) });
      expectTooDeep(over, path);
      expect(over.body.error.details.offset).toBe(`{"events":[{"output":0,"partition_key":"over${path.length}","payload":{"a":`.length + MAX_BODY_DEPTH - 4);
    }
    // Brackets inside strings are text, not nesting.
    const inString = await call(url, 'POST', '/internal/events', { token: attempt, rawBody: `{"events":[{"output":0,"partition_key":"str","payload":{"a":"${'['.repeat(1000)}\\"{{{"}}]}` });
    expect([inString.status, inString.body]).toEqual([200, { accepted: 1, duplicates: 0 }]);
  });

  it('a body that is not valid UTF-8 is refused with the byte offset; JSON in another charset is refused', async () => {
    const prefix = Buffer.from('{"events":[{"output":0,"partition_key":"caf');
    const invalid = Buffer.concat([prefix, Buffer.from([0xe9]), Buffer.from('"}]}')]); // Latin-1 é, not UTF-8
    for (const path of bothPaths('/internal/events')) {
      const res = await call(url, 'POST', path, { token: attempt, rawBody: invalid });
      expect({ path, status: res.status, error: res.body.error }).toEqual({
        path,
        status: 400,
        error: { code: 'invalid_utf8', message: `request body is not valid UTF-8: byte 0xe9 at offset ${prefix.length} does not start a valid UTF-8 sequence`, details: { offset: prefix.length } },
      });
      const utf16 = await call(url, 'POST', path, { token: attempt, rawBody: Buffer.from('{"events":[]}', 'utf16le'), headers: { 'content-type': 'application/json; charset=utf-16le' } });
      expect({ path, status: utf16.status, code: utf16.body.error.code, message: utf16.body.error.message }).toEqual({ path, status: 415, code: 'unsupported_media_type', message: 'JSON request bodies must be UTF-8; got charset "utf-16le"' });
    }
    // A spec, as YAML or as JSON, is refused the same way: nothing replaces the bad byte with U+FFFD.
    const yamlPrefix = Buffer.from('name: bad\ndescription: caf');
    const spec = Buffer.concat([yamlPrefix, Buffer.from([0xe9]), Buffer.from(`\njobs:\n  - {name: a, operator: cryo_ingest, config: {datatypes: [blocks]}, outputs: [{backend: s3, update_strategy: replace}]}\n`)]);
    const jsonPrefix = Buffer.from('{"name":"bad","description":"caf');
    const jsonSpec = Buffer.concat([jsonPrefix, Buffer.from([0xe9]), Buffer.from('","jobs":[]}')]);
    for (const [type, body, offset] of [['application/yaml', spec, yamlPrefix.length], ['text/plain', spec, yamlPrefix.length], ['application/json', jsonSpec, jsonPrefix.length]] as const) {
      for (const path of ['/v1/dags', '/v1/dags/validate']) {
        const res = await call(url, 'POST', path, { token: TOKEN, rawBody: body, headers: { 'content-type': type } });
        expect({ type, path, status: res.status, code: res.body.error.code, details: res.body.error.details }).toEqual({ type, path, status: 400, code: 'invalid_utf8', details: { offset } });
      }
    }
    // A YAML body that declares its charset is decoded as declared.
    const latin1 = await call(url, 'POST', '/v1/dags/validate', { token: TOKEN, rawBody: spec, headers: { 'content-type': 'application/yaml; charset=iso-8859-1' } });
    expect(latin1.status).toBe(200);
    expect((await call(url, 'GET', '/v1/dags/bad', { token: TOKEN })).status).toBe(404);
  });

  it('normal bodies still work on every path', async () => {
    expect((await call(url, 'POST', '/v1/query', { token: TOKEN, body: { sql: 'SELECT 1 AS one', params: [] } })).status).toBe(200);
    const fetchBatch = await call(url, 'POST', '/internal/task-fetch-batch', { token: PLATFORM, body: { task_ids: ['00000000-0000-4000-8000-000000000000'] } });
    expect([fetchBatch.status, fetchBatch.body.tasks[0].error.code]).toEqual([200, 'task_not_found']);
    expect((await call(url, 'PUT', '/internal/operator-state', { token: attempt, body: { expected_version: 0, state: { a: [[1]] } } })).body.error.code).toBe('no_input_event'); // a source run has no input event
    expect((await call(url, 'POST', '/internal/task-complete?via=framework', { token: attempt, body: { status: 'succeeded', events: [{ output: 0, partition_key: 'last' }] } })).status).toBe(200);
    const task = (await call(url, 'GET', '/v1/tasks?dag=bodies', { token: TOKEN })).body[0];
    expect(task.status).toBe('succeeded');
    // Nothing above was an unhandled error.
    expect(trace.logs.filter((l) => l.msg === 'unhandled error')).toEqual([]);
  });
});
