import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { call } from '../support/http';
import { addMember, postYaml } from '../support/org-fixture';
import { createTestDatabase } from '../support/shared-postgres';
import { startTrace, TraceProcess } from '../support/trace-process';

const ADMIN = 'trc_dag-deploy-dev-admin-token-0000';
const seed = (name: string) => readFileSync(join(__dirname, '..', '..', 'seeds', 'dags', name), 'utf8');
const SECRET_VALUE = 'sk_live_DO-NOT-LEAK-7f3a9c1e5b';

const PIPELINE = `name: pipeline
jobs:
  - name: src
    operator: cryo_ingest
    config: { datatypes: [blocks] }
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]
  - name: agg
    operator: range_aggregator
    inputs: [{from: {job: src, output: 0}}]
    config: { range_size: 10000 }
    outputs: [{backend: s3, update_strategy: replace, cursor: block_number, partitioning: range}]
  - name: totals
    operator: sql
    inputs: [{from: {job: agg, output: 0}}]
    config: { sql: "select 1" }
    outputs: [{backend: postgres, update_strategy: append, unique_key: [block_number]}]
publish:
  - {job: src, output_index: 0, dataset_name: blocks}
  - {job: totals, output_index: 0, dataset_name: totals}
`;

describe('deploying DAGs, the dataset registry and read_roles', () => {
  let trace: TraceProcess;
  let url: string;

  beforeAll(async () => {
    trace = await startTrace({ env: { DATABASE_URL: await createTestDatabase('deploy'), TRACE_DEV_TOKEN: ADMIN } });
    url = trace.baseUrl;
  });
  afterAll(async () => {
    expect(await trace.stop()).toBe(0);
  });

  it('the seeds validate and deploy (after their secrets exist)', async () => {
    const eth = seed('ethereum_erc20.yaml');
    const missing = await postYaml(url, '/v1/dags/validate', ADMIN, eth);
    expect(missing.status).toBe(400);
    expect(missing.body.error.details.map((d: { path: string }) => d.path)).toEqual([
      'worker_pools[0].slots[0].secret_env.RPC_API_KEY',
      'worker_pools[0].slots[1].secret_env.RPC_API_KEY',
    ]);
    for (const name of ['eth_rpc_key_1', 'eth_rpc_key_2']) {
      expect((await call(url, 'PUT', `/v1/secrets/${name}`, { token: ADMIN, body: { value: SECRET_VALUE } })).status).toBe(201);
    }
    const deployed = await postYaml(url, '/v1/dags', ADMIN, eth);
    expect(deployed.status).toBe(201);
    expect(deployed.body.version).toMatchObject({ number: 1, status: 'active', author: 'admin@dev.local' });
    expect(deployed.body.plan.publish.added.map((p: { dataset_name: string }) => p.dataset_name)).toEqual([
      'eth_blocks', 'eth_transactions', 'eth_logs', 'erc20_transfers', 'erc20_transfers_per_block',
    ]);

    const alerts = await postYaml(url, '/v1/dags', ADMIN, seed('whale_alerts.yaml'));
    expect(alerts.status).toBe(201);
    // The second detector writes into the first one's buffered dataset: one dataset_uuid, two writers.
    const jobs = alerts.body.plan.jobs as { name: string; outputs: { dataset_uuid: string }[] }[];
    const byName = Object.fromEntries(jobs.map((j) => [j.name, j.outputs[0]!.dataset_uuid]));
    expect(byName.new_token_activity).toBe(byName.large_transfers);

    const alertEvents = await call(url, 'GET', '/v1/datasets/alert_events', { token: ADMIN });
    expect(alertEvents.body).toMatchObject({ dataset_uuid: byName.large_transfers, buffered: true, backend: 'postgres', producer: { dag: 'whale_alerts', job: 'large_transfers', output_index: 0 } });
  });

  it('every output gets a dataset_uuid and a first version in the pointer set; storage names use uuids, never names', async () => {
    const res = await postYaml(url, '/v1/dags', ADMIN, PIPELINE);
    expect(res.status).toBe(201);
    const dag = await call(url, 'GET', '/v1/dags/pipeline', { token: ADMIN });
    expect(dag.body.datasets).toHaveLength(3);
    for (const d of dag.body.datasets) {
      expect(d.dataset_uuid).toMatch(/^[0-9a-f-]{36}$/);
      expect(d.current_version).toMatch(/^[0-9a-f-]{36}$/);
    }
    expect(dag.body.datasets.find((d: { job: string }) => d.job === 'agg').dataset_name).toBeNull(); // unpublished, still registered

    const blocks = await call(url, 'GET', '/v1/datasets/blocks', { token: ADMIN });
    const [version] = blocks.body.versions;
    expect(version.location).toBe(`org/${(await call(url, 'GET', '/v1/me', { token: ADMIN })).body.org_id}/dataset/${blocks.body.dataset_uuid}/version/${version.dataset_version}/`);
    expect(version.location).not.toContain('blocks');
    const totals = await call(url, 'GET', '/v1/datasets/totals', { token: ADMIN });
    expect(totals.body.versions[0].location).toBe(`"ds_${totals.body.dataset_uuid.replace(/-/g, '')}"."v_${totals.body.versions[0].dataset_version.replace(/-/g, '')}"`);
  });

  it('a dataset name that breaks the naming rule is a 400 naming the rule on every dataset route; an unknown valid name is a 404', async () => {
    const rule = 'must be a dataset name: lower snake_case, ^[a-z][a-z0-9_]{0,127}$';
    const version = (await call(url, 'GET', '/v1/datasets/blocks', { token: ADMIN })).body.versions[0].dataset_version as string;
    for (const [method, path, body] of [
      ['GET', '/v1/datasets/MyData', undefined],
      ['GET', '/v1/datasets/Blocks', undefined],
      ['GET', `/v1/datasets/${'a'.repeat(129)}`, undefined],
      ['GET', '/v1/datasets/9blocks', undefined],
      ['PUT', '/v1/datasets/Blocks/read-roles', { read_roles: ['analyst'] }],
      ['POST', `/v1/datasets/Blocks/versions/${version}/purge`, undefined],
    ] as const) {
      const res = await call(url, method, path, { token: ADMIN, body });
      expect({ path, status: res.status, error: res.body.error }).toEqual({ path, status: 400, error: { code: 'validation_failed', message: `name ${rule}`, details: [{ field: 'name', reason: rule }] } });
    }
    const unknown = await call(url, 'GET', '/v1/datasets/my_data', { token: ADMIN });
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'dataset_not_found']);
    expect((await call(url, 'GET', '/v1/datasets/blocks', { token: ADMIN })).status).toBe(200);
  });

  it('re-deploying an identical spec is a no-op that says so', async () => {
    // Same content, other formatting and key order.
    const reformatted = PIPELINE.replace('{ range_size: 10000 }', '{range_size: 10000}').replace('{backend: postgres, update_strategy: append, unique_key: [block_number]}', '{unique_key: [block_number], update_strategy: append, backend: postgres}');
    const res = await postYaml(url, '/v1/dags', ADMIN, reformatted);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ created_version: false, message: 'identical to version 1; nothing to deploy', plan: { change: 'unchanged' } });
    expect((await call(url, 'GET', '/v1/dags/pipeline/versions', { token: ADMIN })).body).toHaveLength(1);
  });

  it('publish rename and unpublish are metadata only: dataset_uuid and versions unchanged', async () => {
    const before = await call(url, 'GET', '/v1/datasets/blocks', { token: ADMIN });
    const renamed = PIPELINE.replace('dataset_name: blocks}', 'dataset_name: eth_blocks_v2}').replace('  - {job: totals, output_index: 0, dataset_name: totals}\n', '');
    const res = await postYaml(url, '/v1/dags', ADMIN, renamed);
    expect(res.status).toBe(201);
    expect(res.body.version).toMatchObject({ number: 2, status: 'active' });
    expect(res.body.plan).toMatchObject({ change: 'update', activation: 'immediate', rematerialize: [] });
    expect(res.body.plan.publish.renamed).toEqual([{ job: 'src', output_index: 0, dataset_name: 'eth_blocks_v2', previous_name: 'blocks' }]);
    expect(res.body.plan.publish.removed).toEqual([{ job: 'totals', output_index: 0, dataset_name: 'totals' }]);

    const after = await call(url, 'GET', '/v1/datasets/eth_blocks_v2', { token: ADMIN });
    expect(after.body.dataset_uuid).toBe(before.body.dataset_uuid);
    expect(after.body.versions).toEqual(before.body.versions);
    expect((await call(url, 'GET', '/v1/datasets/blocks', { token: ADMIN })).status).toBe(404);
    expect((await call(url, 'GET', '/v1/datasets/totals', { token: ADMIN })).status).toBe(404);
  });

  it('execution-only edits activate at once; materialization edits are stored pending with the edited job and its downstream', async () => {
    const current = (await call(url, 'GET', '/v1/dags/pipeline/versions/2', { token: ADMIN })).body.spec_text as string;
    const execOnly = current.replace('    config: { range_size: 10000 }', '    config: { range_size: 10000 }\n    max_attempts: 7\n    timeout: 1h');
    const exec = await postYaml(url, '/v1/dags', ADMIN, execOnly);
    expect(exec.body.version).toMatchObject({ number: 3, status: 'active' });
    expect(exec.body.plan.jobs.find((j: { name: string }) => j.name === 'agg')).toMatchObject({ change: 'execution', changed_fields: ['timeout_seconds', 'max_attempts'], rematerialize: false });

    const edited = execOnly.replace('range_size: 10000', 'range_size: 5000');
    const mat = await postYaml(url, '/v1/dags', ADMIN, edited);
    expect(mat.status).toBe(201);
    expect(mat.body.version).toMatchObject({ number: 4, status: 'pending' });
    expect(mat.body.plan.rematerialize).toEqual(['agg', 'totals']);
    expect(mat.body.plan.jobs.find((j: { name: string }) => j.name === 'src')).toMatchObject({ change: 'unchanged', rematerialize: false });
    const dag = await call(url, 'GET', '/v1/dags/pipeline', { token: ADMIN });
    expect(dag.body.active_version.number).toBe(3); // old versions keep serving
    expect(dag.body.latest_version.number).toBe(4);
  });

  it('the active version\'s exact spec, deployed again while an edit waits pending, is a no-op: nothing stored, the pending version stays pending', async () => {
    const active = (await call(url, 'GET', '/v1/dags/pipeline/versions/3', { token: ADMIN })).body.spec_text as string;
    const statuses = async () => (await call(url, 'GET', '/v1/dags/pipeline/versions', { token: ADMIN })).body.map((v: { number: number; status: string }) => `${v.number}:${v.status}`);
    expect(await statuses()).toEqual(['1:superseded', '2:superseded', '3:active', '4:pending']);

    const validated = await postYaml(url, '/v1/dags/validate', ADMIN, active);
    expect(validated.body.plan).toMatchObject({ change: 'unchanged', activation: 'none', rematerialize: [] });
    const res = await postYaml(url, '/v1/dags', ADMIN, active);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      created_version: false,
      message: 'identical to the active version 3; nothing to deploy (version 4 stays pending)',
      version: { number: 3, status: 'active' },
      plan: { change: 'unchanged', activation: 'none', rematerialize: [] },
    });
    expect(res.body.plan.jobs.every((j: { change: string }) => j.change === 'unchanged')).toBe(true);
    expect(await statuses()).toEqual(['1:superseded', '2:superseded', '3:active', '4:pending']);
    const dag = (await call(url, 'GET', '/v1/dags/pipeline', { token: ADMIN })).body;
    expect([dag.active_version.number, dag.latest_version.number]).toEqual([3, 4]);

    // The pending version's own spec again is the usual no-op, too.
    const pending = (await call(url, 'GET', '/v1/dags/pipeline/versions/4', { token: ADMIN })).body.spec_text as string;
    expect((await postYaml(url, '/v1/dags', ADMIN, pending)).body).toMatchObject({ created_version: false, message: 'identical to version 4; nothing to deploy' });
    expect(await statuses()).toEqual(['1:superseded', '2:superseded', '3:active', '4:pending']);
  });

  it('a name published by another DAG cannot be published again (no cross-DAG shared writes)', async () => {
    const res = await postYaml(url, '/v1/dags', ADMIN, PIPELINE.replace('name: pipeline', 'name: copycat').replace('dataset_name: blocks}', 'dataset_name: eth_logs}'));
    expect(res.status).toBe(400);
    expect(res.body.error.details).toEqual([
      expect.objectContaining({ path: 'publish[0].dataset_name', reason: expect.stringContaining('already produced by DAG "ethereum_erc20"') }),
    ]);
    expect((await call(url, 'GET', '/v1/dags/copycat', { token: ADMIN })).status).toBe(404);
  });

  describe('the ACL matrix', () => {
    let deployer: { id: string; token: string };
    let analyst: { id: string; token: string };
    let viewer: { id: string; token: string };
    let outsider: string;

    const READER_DAG = (name: string) => `name: ${name}
jobs:
  - name: reader
    operator: sql
    config: {sql: "select * from input_0"}
    inputs: [{from: {dataset: team_blocks}}]
    outputs: [{backend: s3, update_strategy: replace}]
`;

    beforeAll(async () => {
      deployer = await addMember(url, ADMIN, 'dev', 'deployer@dev.local', ['deployer']);
      analyst = await addMember(url, ADMIN, 'dev', 'analyst@dev.local', ['analyst']);
      viewer = await addMember(url, ADMIN, 'dev', 'viewer@dev.local', ['viewer']);
      const other = await call(url, 'POST', '/v1/orgs', { token: ADMIN, body: { name: 'other', admin_email: 'root@other.example' } });
      outsider = other.body.token.token;
      // The deployer creates a DAG and so may read and overwrite its datasets.
      const res = await postYaml(url, '/v1/dags', deployer.token, PIPELINE.replace('name: pipeline', 'name: team').replace('dataset_name: blocks}', 'dataset_name: team_blocks}').replace('dataset_name: totals}', 'dataset_name: team_totals}'));
      expect(res.status).toBe(201);
    });

    const canRead = async (token: string, name = 'team_blocks') => {
      const one = await call(url, 'GET', `/v1/datasets/${name}`, { token });
      const list = await call(url, 'GET', '/v1/datasets', { token });
      const listed = list.body.some((d: { dataset_name: string }) => d.dataset_name === name);
      expect(one.status === 200).toBe(listed); // the list and the lookup agree
      if (one.status !== 200) expect(one.body.error.code).toBe('dataset_not_found');
      return one.status === 200;
    };
    const canReadInDag = async (token: string, dagName: string) => (await postYaml(url, '/v1/dags/validate', token, READER_DAG(dagName))).status === 200;

    it('empty read_roles: the producing DAG\'s deployers and org admins only', async () => {
      expect(await canRead(ADMIN)).toBe(true);
      expect(await canRead(deployer.token)).toBe(true);
      expect(await canRead(analyst.token)).toBe(false);
      expect(await canRead(viewer.token)).toBe(false);
      expect(await canRead(outsider)).toBe(false);
    });

    it('read_roles are set by org admins only, never from DAG config', async () => {
      const byDeployer = await call(url, 'PUT', '/v1/datasets/team_blocks/read-roles', { token: deployer.token, body: { read_roles: ['analyst'] } });
      expect(byDeployer.status).toBe(403);
      const byOutsider = await call(url, 'PUT', '/v1/datasets/team_blocks/read-roles', { token: outsider, body: { read_roles: ['analyst'] } });
      expect(byOutsider.status).toBe(404); // their org has no such dataset
      const set = await call(url, 'PUT', '/v1/datasets/team_blocks/read-roles', { token: ADMIN, body: { read_roles: ['analyst'] } });
      expect(set.status).toBe(200);
      expect(set.body.read_roles).toEqual(['analyst']);
      const bad = await call(url, 'PUT', '/v1/datasets/team_blocks/read-roles', { token: ADMIN, body: { read_roles: ['Analyst!'] } });
      expect(bad.status).toBe(400);
    });

    it('non-empty read_roles: those roles as well, and nobody else', async () => {
      expect(await canRead(ADMIN)).toBe(true);
      expect(await canRead(deployer.token)).toBe(true);
      expect(await canRead(analyst.token)).toBe(true);
      expect(await canRead(viewer.token)).toBe(false);
      expect(await canRead(outsider)).toBe(false);
      expect(await canRead(analyst.token, 'team_totals')).toBe(false); // read_roles are per dataset
    });

    it('the same rule gates `from: {dataset}` inputs at deploy', async () => {
      expect(await canReadInDag(ADMIN, 'reader_admin')).toBe(true);
      // analyst may read but may not create DAGs; the deployer role may.
      expect((await postYaml(url, '/v1/dags', analyst.token, READER_DAG('reader_analyst'))).status).toBe(403);
      expect(await canReadInDag(analyst.token, 'reader_analyst')).toBe(true);
      expect(await canReadInDag(viewer.token, 'reader_viewer')).toBe(false);
      const outside = await postYaml(url, '/v1/dags/validate', outsider, READER_DAG('reader_outside'));
      expect(outside.body.error.details[0]).toMatchObject({ path: 'jobs[0].inputs[0].from.dataset', reason: expect.stringContaining('no published dataset "team_blocks" that you may read') });
    });

    it('deploy permission on a DAG is the DAG\'s own: others need a grant from an org admin', async () => {
      const edit = PIPELINE.replace('name: pipeline', 'name: team').replace('dataset_name: blocks}', 'dataset_name: team_blocks}').replace('dataset_name: totals}', 'dataset_name: team_totals}').replace('select 1', 'select 2');
      const other = await addMember(url, ADMIN, 'dev', 'other-deployer@dev.local', ['deployer']);
      const refused = await postYaml(url, '/v1/dags', other.token, edit);
      expect(refused.status).toBe(403);
      expect(refused.body.error.code).toBe('dag_deploy_forbidden');
      expect(await canRead(other.token)).toBe(false);

      expect((await call(url, 'PUT', '/v1/dags/team/grants', { token: deployer.token, body: { permission: 'deploy', user_ids: [other.id] } })).status).toBe(403);
      expect((await call(url, 'PUT', '/v1/dags/team/grants', { token: ADMIN, body: { permission: 'deploy', user_ids: [other.id] } })).status).toBe(204);
      expect((await postYaml(url, '/v1/dags', other.token, edit)).status).toBe(201);
      expect(await canRead(other.token)).toBe(true);
    });

    it('other orgs see nothing of this org: DAGs, datasets, secrets', async () => {
      expect((await call(url, 'GET', '/v1/dags', { token: outsider })).body).toEqual([]);
      expect((await call(url, 'GET', '/v1/dags/team', { token: outsider })).status).toBe(404);
      expect((await call(url, 'GET', '/v1/datasets', { token: outsider })).body).toEqual([]);
      expect((await call(url, 'GET', '/v1/secrets', { token: outsider })).body).toEqual([]);
    });
  });

  it('a secret\'s value never appears in any response or log line', async () => {
    const list = await call(url, 'GET', '/v1/secrets', { token: ADMIN });
    expect(list.body.map((s: { name: string }) => s.name)).toEqual(['eth_rpc_key_1', 'eth_rpc_key_2']);
    const replaced = await call(url, 'PUT', '/v1/secrets/eth_rpc_key_1', { token: ADMIN, body: { value: `${SECRET_VALUE}-rotated` } });
    expect(replaced.status).toBe(200);
    const bad = await call(url, 'PUT', '/v1/secrets/Bad%20Name', { token: ADMIN, body: { value: SECRET_VALUE } });
    expect(bad.status).toBe(400);
    const extra = await call(url, 'PUT', '/v1/secrets/x', { token: ADMIN, body: { value: SECRET_VALUE, note: SECRET_VALUE } });
    expect(extra.status).toBe(400);
    const analystToken = (await addMember(url, ADMIN, 'dev', 'curious@dev.local', ['analyst'])).token;
    expect((await call(url, 'PUT', '/v1/secrets/eth_rpc_key_1', { token: analystToken, body: { value: 'x' } })).status).toBe(403);

    const everything = [list, replaced, bad, extra].map((r) => r.text).join('\n');
    const dag = await call(url, 'GET', '/v1/dags/ethereum_erc20/versions/1', { token: ADMIN });
    expect(everything + dag.text + JSON.stringify(trace.logs) + trace.stderr()).not.toContain(SECRET_VALUE);
    expect(`${everything}${dag.text}`).not.toContain('ciphertext');
  });
});
