import { call } from '../support/http';
import { postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';

const TOKEN = 'trc_dag-validation-dev-token-000000';

/** A minimal valid DAG; cases below break one thing each. */
const base = (jobs: string, extra = '') => `name: probe
jobs:
${jobs}
${extra}`;
const source = `  - name: src
    operator: cryo_ingest
    config: {datatypes: [blocks]}
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]`;

const CASES: { rule: string; yaml: string; path: string; reason: RegExp }[] = [
  { rule: 'unknown operator', yaml: base(`  - name: a\n    operator: spark\n    outputs: []`), path: 'jobs[0].operator', reason: /unknown value "spark"; expected one of: cryo_ingest/ },
  { rule: 'unknown runtime', yaml: base(`${source}\n    runtime: k8s`), path: 'jobs[0].runtime', reason: /unknown value "k8s"; expected one of: ecs, lambda/ },
  { rule: 'unknown language', yaml: base(`  - name: a\n    operator: user\n    language: cobol\n    entry_point: main.cob`), path: 'jobs[0].language', reason: /expected one of: typescript, javascript, python, rust/ },
  { rule: 'user code without entry point', yaml: base(`  - name: a\n    operator: user\n    language: python`), path: 'jobs[0].entry_point', reason: /required for user code/ },
  { rule: 'dangling job', yaml: base(`${source}\n  - name: b\n    operator: sql\n    inputs: [{from: {job: nope, output: 0}}]`), path: 'jobs[1].inputs[0].from.job', reason: /no job named "nope"/ },
  { rule: 'dangling output index', yaml: base(`${source}\n  - name: b\n    operator: sql\n    inputs: [{from: {job: src, output: 2}}]`), path: 'jobs[1].inputs[0].from.output', reason: /has 1 output\(s\); index 2 does not exist/ },
  {
    rule: 'cycle',
    yaml: base(`  - name: a\n    operator: sql\n    inputs: [{from: {job: b, output: 0}}]\n    outputs: [{backend: s3, update_strategy: replace}]\n  - name: b\n    operator: sql\n    inputs: [{from: {job: a, output: 0}}]\n    outputs: [{backend: s3, update_strategy: replace}]`),
    path: 'jobs[0].inputs',
    reason: /cycle: a → b → a/,
  },
  { rule: 'duplicate job names', yaml: base(`${source}\n${source}`), path: 'jobs[1].name', reason: /duplicate job name "src"/ },
  { rule: 'bad dataset_name', yaml: base(source, `publish: [{job: src, output_index: 0, dataset_name: Blocks}]`), path: 'publish[0].dataset_name', reason: /must match \^\[a-z\]\[a-z0-9_\]\{0,127\}\$/ },
  { rule: 'dataset_name too long', yaml: base(source, `publish: [{job: src, output_index: 0, dataset_name: ${'a'.repeat(129)}}]`), path: 'publish[0].dataset_name', reason: /must match/ },
  { rule: 'worker pool that does not exist', yaml: base(`${source}\n    worker_pool: rpc`), path: 'jobs[0].worker_pool', reason: /no worker pool named "rpc"/ },
  {
    rule: 'secret that does not exist',
    yaml: base(`${source}\n    worker_pool: rpc`, `worker_pools: [{name: rpc, slots: [{env: {RPC_URL: "http://x"}, secret_env: {RPC_KEY: no_such_secret}}]}]`),
    path: 'worker_pools[0].slots[0].secret_env.RPC_KEY',
    reason: /no secret named "no_such_secret"/,
  },
  { rule: 'bad type', yaml: base(`${source}\n    max_attempts: "three"`), path: 'jobs[0].max_attempts', reason: /must be an integer, got string "three"/ },
  { rule: 'cryo_ingest: unknown datatype', yaml: base(`  - name: a\n    operator: cryo_ingest\n    config: {datatypes: [blocks, uncles]}\n    outputs: [{backend: s3, update_strategy: replace}, {backend: s3, update_strategy: replace}]`), path: 'jobs[0].config.datatypes[1]', reason: /must be one of blocks, transactions, logs/ },
  { rule: 'cryo_ingest: chunk_size out of range', yaml: base(`  - name: a\n    operator: cryo_ingest\n    config: {datatypes: [blocks], chunk_size: 0}\n    outputs: [{backend: s3, update_strategy: replace}]`), path: 'jobs[0].config.chunk_size', reason: /integer from 1 to 1000000/ },
  { rule: 'cryo_ingest: one output per datatype', yaml: base(`  - name: a\n    operator: cryo_ingest\n    config: {datatypes: [blocks, logs]}\n    outputs: [{backend: s3, update_strategy: replace}]`), path: 'jobs[0].config.datatypes', reason: /one output per datatype/ },
  { rule: 'cryo_ingest: key in the config', yaml: base(`  - name: a\n    operator: cryo_ingest\n    config: {datatypes: [blocks], rpc_url: "ws://x", api_key: k}\n    outputs: [{backend: s3, update_strategy: replace}]`), path: 'jobs[0].config.api_key', reason: /unknown field/ },
  { rule: 'sql without a query', yaml: base(`${source}\n  - name: b\n    operator: sql\n    inputs: [{from: {job: src, output: 0}}]\n    outputs: [{backend: s3, update_strategy: replace}]`), path: 'jobs[1].config.sql', reason: /one SELECT statement/ },
  { rule: 'unknown field', yaml: base(`${source}\n    retries: 3`), path: 'jobs[0].retries', reason: /unknown field/ },
  { rule: 'execution_strategy Bulk', yaml: base(`${source}\n    execution_strategy: Bulk`), path: 'jobs[0].execution_strategy', reason: /range_aggregator \/ range_splitter/ },
  { rule: 'append without unique_key', yaml: base(`  - name: a\n    operator: cryo_ingest\n    outputs: [{backend: postgres, update_strategy: append}]`), path: 'jobs[0].outputs[0].unique_key', reason: /required when update_strategy is append/ },
  { rule: 'buffered S3 output', yaml: base(`  - name: a\n    operator: cryo_ingest\n    outputs: [{backend: s3, update_strategy: replace, buffered: true}]`), path: 'jobs[0].outputs[0].buffered', reason: /use backend: postgres/ },
  { rule: 'reading a dataset that does not exist (or that the deployer may not read)', yaml: base(`  - name: a\n    operator: sql\n    config: {sql: select 1}\n    inputs: [{from: {dataset: secret_stuff}}]\n    outputs: [{backend: s3, update_strategy: replace}]`), path: 'jobs[0].inputs[0].from.dataset', reason: /no published dataset "secret_stuff" that you may read/ },
  { rule: 'injection in a name', yaml: base(source, `publish: [{job: src, output_index: 0, dataset_name: "x; DROP TABLE datasets; --"}]`), path: 'publish[0].dataset_name', reason: /must match/ },
];

describe('DAG spec validation through POST /v1/dags', () => {
  let trace: TraceProcess;

  beforeAll(async () => {
    trace = await startTrace({ env: { DATABASE_URL: await createTestDatabase('dagval'), TRACE_DEV_TOKEN: TOKEN } });
  });
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it.each(CASES)('rejects $rule at $path', async ({ yaml, path, reason }) => {
    for (const endpoint of ['/v1/dags/validate', '/v1/dags']) {
      const res = await postYaml(trace.baseUrl, endpoint, TOKEN, yaml);
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('invalid_dag_spec');
      const violation = res.body.error.details.find((d: { path: string }) => d.path === path);
      expect(violation).toBeDefined();
      expect(violation.reason).toMatch(reason);
      expect(typeof violation.line).toBe('number'); // located in the YAML source
    }
  });

  it('reports every problem at once, each with its path', async () => {
    const yaml = `name: Bad-Name
jobs:
  - name: a
    operator: spark
    inputs: [{from: {job: ghost, output: 0}}]
    timeout: forever
  - name: a
    operator: sql
publish: [{job: nobody, dataset_name: x}]`;
    const res = await postYaml(trace.baseUrl, '/v1/dags/validate', TOKEN, yaml);
    expect(res.status).toBe(400);
    expect(res.body.error.details.map((d: { path: string }) => d.path).sort()).toEqual(
      ['jobs[0].inputs[0].from.job', 'jobs[0].operator', 'jobs[0].timeout', 'jobs[1].config.sql', 'jobs[1].inputs', 'jobs[1].name', 'jobs[1].outputs', 'name', 'publish[0].job'].sort(),
    );
  });

  it('malformed YAML is reported with line and column', async () => {
    const res = await postYaml(trace.baseUrl, '/v1/dags', TOKEN, 'name: x\njobs:\n  - name: a\n    operator: [sql\n');
    expect(res.status).toBe(400);
    expect(res.body.error.details[0]).toMatchObject({ path: '', reason: expect.stringMatching(/^malformed YAML/), line: expect.any(Number), column: expect.any(Number) });
  });

  it('duplicate keys, anchors, oversized specs and non-mapping documents are refused', async () => {
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, 'name: a\nname: b\njobs: []\n')).body.error.details[0].reason).toMatch(/unique/);
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, 'name: &n x\njobs: *n\n')).body.error.details[0].reason).toMatch(/anchors and aliases/);
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, 'name: x\ndescription: !!binary aGk=\njobs: []\n')).body.error.details[0].reason).toMatch(/YAML tags/);
    const huge = `name: big\ndescription: "${'x'.repeat(300 * 1024)}"\njobs: []\n`;
    const big = await postYaml(trace.baseUrl, '/v1/dags', TOKEN, huge);
    expect(big.status).toBe(400);
    expect(big.body.error.details[0].reason).toMatch(/the limit is 262144/);
    expect((await postYaml(trace.baseUrl, '/v1/dags', TOKEN, '- just\n- a list\n')).body.error.details[0]).toMatchObject({ path: '', reason: 'must be a mapping, got a list' });
  });

  it('accepts JSON as well as YAML', async () => {
    const res = await call(trace.baseUrl, 'POST', '/v1/dags/validate', {
      token: TOKEN,
      body: { name: 'json_dag', jobs: [{ name: 'src', operator: 'cryo_ingest', config: { datatypes: ['blocks'] }, outputs: [{ backend: 's3', update_strategy: 'replace' }] }] },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ valid: true, plan: { dag: 'json_dag', change: 'create', activation: 'immediate' } });
  });

  it('scaling.mode is accepted with a warning', async () => {
    const res = await postYaml(trace.baseUrl, '/v1/dags/validate', TOKEN, base(`${source}\n    scaling: {max_concurrency: 4, mode: aggressive}`));
    expect(res.status).toBe(200);
    expect(res.body.plan.warnings).toEqual([{ path: 'jobs[0].scaling.mode', message: expect.stringContaining('ignored') }]);
  });

  it('an append Postgres output of a sql job without a cursor column is accepted with a warning about reorgs', async () => {
    const res = await call(trace.baseUrl, 'POST', '/v1/dags/validate', {
      token: TOKEN,
      body: {
        name: 'append_warning',
        jobs: [
          { name: 'src', operator: 'cryo_ingest', config: { datatypes: ['logs'] }, outputs: [{ backend: 's3', update_strategy: 'replace', cursor: 'block_number', partitioning: 'range' }] },
          { name: 'rows', operator: 'sql', inputs: [{ from: { job: 'src' } }], config: { sql: 'SELECT * FROM input_0' }, outputs: [{ backend: 'postgres', update_strategy: 'append', unique_key: ['block_number', 'log_index'] }] },
          { name: 'by_block', operator: 'sql', inputs: [{ from: { job: 'src' } }], config: { sql: 'SELECT * FROM input_0' }, outputs: [{ backend: 'postgres', update_strategy: 'append', unique_key: ['block_number', 'log_index'], cursor: 'block_number' }] },
        ],
      },
    });
    expect(res.status).toBe(200);
    expect(res.body.plan.warnings).toEqual([{ path: 'jobs[1].outputs[0].cursor', message: expect.stringContaining('after a reorg a re-derived row keeps its old values') }]);
  });

  it('nothing is stored by rejected deploys', async () => {
    const dags = await call(trace.baseUrl, 'GET', '/v1/dags', { token: TOKEN });
    expect(dags.body).toEqual([]);
    expect((await call(trace.baseUrl, 'GET', '/v1/datasets', { token: TOKEN })).body).toEqual([]);
  });
});
