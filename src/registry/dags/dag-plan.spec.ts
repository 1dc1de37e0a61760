import { DagSpec } from './dag-spec';
import { parseSpecText } from './dag-spec.parser';
import { validateDagSpec } from './dag-spec.validator';
import { ExistingDatasets, planDeploy, specHash } from './dag-plan';

const spec = (aggConfig: string, maxAttempts = 3): DagSpec => {
  const parsed = parseSpecText(`name: p
jobs:
  - name: src
    operator: cryo_ingest
    config: {datatypes: [blocks]}
    outputs: [{backend: s3, update_strategy: replace}]
  - name: agg
    operator: range_aggregator
    inputs: [{from: {job: src, output: 0}}]
    config: ${aggConfig}
    max_attempts: ${maxAttempts}
    outputs: [{backend: s3, update_strategy: replace}]
`);
  const { spec: checked, violations } = validateDagSpec(parsed.value);
  if (!checked) throw new Error(JSON.stringify(violations));
  return checked;
};

describe('planDeploy', () => {
  const v1 = spec('{range_size: 10000}');
  const v2 = spec('{range_size: 5000}'); // a materialization edit of agg
  const existing: ExistingDatasets = new Map();

  it('the spec of the active version is nothing to deploy, even while a newer version is pending', () => {
    const plan = planDeploy(v1, v1, existing, [], { latest: specHash(v2), active: specHash(v1) });
    expect(plan).toMatchObject({ change: 'unchanged', activation: 'none', rematerialize: [] });
    expect(plan.jobs.map((j) => j.change)).toEqual(['unchanged', 'unchanged']);
  });

  it('the spec of the newest (pending) version again is nothing to deploy', () => {
    expect(planDeploy(v2, v1, existing, [], { latest: specHash(v2), active: specHash(v1) })).toMatchObject({ change: 'unchanged', activation: 'none' });
  });

  it('a materialization edit over the active version is stored pending with its downstream; an execution-only edit activates at once', () => {
    expect(planDeploy(v2, v1, existing, [], { latest: specHash(v1), active: specHash(v1) })).toMatchObject({ change: 'update', activation: 'after_rematerialization', rematerialize: ['agg'] });
    const exec = planDeploy(spec('{range_size: 10000}', 7), v1, existing, [], { latest: specHash(v2), active: specHash(v1) });
    expect(exec).toMatchObject({ change: 'update', activation: 'immediate', rematerialize: [] });
    expect(exec.jobs.find((j) => j.name === 'agg')).toMatchObject({ change: 'execution', changed_fields: ['max_attempts'] });
  });

  it('a first deploy is a create', () => {
    expect(planDeploy(v1, undefined, existing, [])).toMatchObject({ change: 'create', activation: 'immediate', rematerialize: [] });
  });
});
