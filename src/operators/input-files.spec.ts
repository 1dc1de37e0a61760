import type { EventRef, OutputRef, TaskPayload } from '../dispatcher/core/task-payload';
import {
  assertOutputLocation,
  claimedInputKeys,
  datasetLocation,
  isDatasetLocation,
  keysOutsideEvent,
  parseDatasetFileKey,
  resolveInputKeys,
  tableLocation,
} from './input-files';

const ORG = '0b6f0c1e-54a4-4a36-9f7e-1d2c3b4a5f60';
const OTHER_ORG = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const DS = '11111111-2222-4333-8444-555555555555';
const V = '66666666-7777-4888-9999-aaaaaaaaaaaa';
const UPSTREAM_DS = 'bbbbbbbb-cccc-4ddd-8eee-ffffffffffff';
const UPSTREAM_V = '12345678-90ab-4cde-8f01-234567890abc';
const here = datasetLocation(ORG, DS, V);
const upstream = datasetLocation(ORG, UPSTREAM_DS, UPSTREAM_V);

const event = (payload: Record<string, unknown>, over: Partial<EventRef> = {}): EventRef => ({
  id: '1',
  dataset_uuid: DS,
  dataset_version: V,
  location: here,
  kind: 'data',
  partition_key: null,
  start: '0',
  end: '999',
  cursor: null,
  payload,
  ...over,
});

/** An operator context with only what the check uses; `asked` counts calls to the dispatcher. */
const context = (locations: string[]) => {
  const ctx = {
    asked: 0,
    payload: { org_id: ORG } as TaskPayload,
    readableLocations: () => {
      ctx.asked++;
      return Promise.resolve(locations);
    },
  };
  return ctx;
};

describe('dataset file keys', () => {
  it('parses exactly the layout the registry records, and nothing else', () => {
    expect(parseDatasetFileKey(`${here}0_999.parquet`)).toEqual({ org_id: ORG, dataset_uuid: DS, dataset_version: V, location: here });
    expect(parseDatasetFileKey(`${here}-5_12.parquet`)?.location).toBe(here);
    const refused = [
      `${here}../0_999.parquet`,
      `${here}./0_999.parquet`,
      `org/${ORG}/dataset/${DS}/version/${V}/../../../../${OTHER_ORG}/dataset/${DS}/version/${V}/0_999.parquet`,
      `/${here}0_999.parquet`,
      '/etc/passwd',
      `org/${ORG}/query/${DS}/result.parquet`,
      `${here}0_999.parquet.tmp`,
      `${here}0_999.csv`,
      `${here}sub/0_999.parquet`,
      `${here}0_999.parquet\n`,
      `${here}0_999.parquet/`,
      `${here}0 _999.parquet`,
      `org/${ORG.toUpperCase()}/dataset/${DS}/version/${V}/0_999.parquet`,
      `org/${ORG}/dataset/${DS}/version/${V}//0_999.parquet`,
      `org//${ORG}/dataset/${DS}/version/${V}/0_999.parquet`,
      `s3://bucket/${here}0_999.parquet`,
      `${here}0_999.parquet`.replace('/', '\\'),
      `${here}０_999.parquet`,
      '',
    ];
    for (const key of refused) expect({ key, parsed: parseDatasetFileKey(key) }).toEqual({ key, parsed: undefined });
    expect(parseDatasetFileKey(42)).toBeUndefined();
  });

  it('knows a dataset version location from a table location or anything else', () => {
    expect(isDatasetLocation(here)).toBe(true);
    expect(isDatasetLocation(tableLocation(DS, V))).toBe(false);
    expect(isDatasetLocation(here.slice(0, -1))).toBe(false);
    expect(isDatasetLocation(`${here}x/`)).toBe(false);
  });
});

describe('claimedInputKeys', () => {
  it('takes payload.files, else payload.key, else the range file under the event location', () => {
    expect(claimedInputKeys(event({ files: [`${here}0_499.parquet`, `${here}500_999.parquet`] }), 'sql')).toEqual([`${here}0_499.parquet`, `${here}500_999.parquet`]);
    expect(claimedInputKeys(event({ key: `${here}0_999.parquet` }), 'sql')).toEqual([`${here}0_999.parquet`]);
    expect(claimedInputKeys(event({}), 'sql')).toEqual([`${here}0_999.parquet`]);
  });

  it('refuses files or key of the wrong type instead of skipping them, and a range event of a table-backed version', () => {
    expect(() => claimedInputKeys(event({ files: [`${here}0_999.parquet`, 7] }), 'sql')).toThrow('sql: the input event\'s payload.files must be a list of dataset file keys');
    expect(() => claimedInputKeys(event({ files: 'x' }), 'range_splitter')).toThrow('range_splitter: the input event\'s payload.files');
    expect(() => claimedInputKeys(event({ key: ['a'] }), 'sql')).toThrow('sql: the input event\'s payload.key must be a dataset file key');
    expect(() => claimedInputKeys(event({}, { location: tableLocation(DS, V) }), 'sql')).toThrow('is not stored as files');
    expect(() => claimedInputKeys(event({}, { start: null, end: null }), 'sql')).toThrow('sql: the input event names no files');
  });
});

describe('keysOutsideEvent (rule 1, and rule 2 against the event location)', () => {
  it('passes keys under the event location and hands back the others', () => {
    expect(keysOutsideEvent([`${here}0_999.parquet`], event({}), ORG, 'sql')).toEqual([]);
    expect(keysOutsideEvent([`${here}0_999.parquet`, `${upstream}0_999.parquet`], event({}), ORG, 'sql')).toEqual([`${upstream}0_999.parquet`]);
  });

  it('refuses a malformed key or another org\'s key, naming the key and the rule', () => {
    expect(() => keysOutsideEvent([`${here}../x.parquet`], event({}), ORG, 'sql')).toThrow(
      `sql: input file "${here}../x.parquet" is not a dataset file key (org/{org_id}/dataset/{dataset_uuid}/version/{dataset_version}/{start}_{end}.parquet); event payloads cannot point at other data`,
    );
    const foreign = `${datasetLocation(OTHER_ORG, DS, V)}0_999.parquet`;
    expect(() => keysOutsideEvent([foreign], event({}), ORG, 'range_aggregator')).toThrow(`range_aggregator: input file "${foreign}" belongs to another org; event payloads cannot point at other data`);
    // Even under the event's own location: a location of another org is never this task's to read.
    expect(() => keysOutsideEvent([foreign], event({}, { location: datasetLocation(OTHER_ORG, DS, V) }), ORG, 'sql')).toThrow('belongs to another org');
  });

  it('cuts a long key short in the message (a task error holds 4,000 characters)', () => {
    const long = 'a'.repeat(60_000);
    let message = '';
    try {
      keysOutsideEvent([long], event({}), ORG, 'sql');
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message.length).toBeLessThan(500);
    expect(message).toContain('…');
  });
});

describe('resolveInputKeys', () => {
  it('does not ask the dispatcher when every key is under the event location', async () => {
    const ctx = context([]);
    await expect(resolveInputKeys(ctx, event({ key: `${here}0_999.parquet` }), 'sql')).resolves.toEqual([`${here}0_999.parquet`]);
    await expect(resolveInputKeys(ctx, event({}), 'sql')).resolves.toEqual([`${here}0_999.parquet`]);
    expect(ctx.asked).toBe(0);
  });

  it('accepts keys under a location the dispatcher allows (a pass-through manifest), asking once', async () => {
    const ctx = context([here, upstream]);
    const files = [`${upstream}0_249.parquet`, `${upstream}250_499.parquet`];
    await expect(resolveInputKeys(ctx, event({ files }), 'range_splitter')).resolves.toEqual(files);
    expect(ctx.asked).toBe(1);
  });

  it('refuses a key under neither, naming it, the event location and the rule', async () => {
    const ctx = context([here, upstream]);
    const other = `${datasetLocation(ORG, DS, UPSTREAM_V)}0_999.parquet`;
    await expect(resolveInputKeys(ctx, event({ files: [`${upstream}0_249.parquet`, other] }), 'sql')).rejects.toThrow(
      `sql: input file "${other}" is outside the input dataset version (${here}) and its lineage; event payloads cannot point at other data`,
    );
  });

  it('refuses outright, without asking, a key no lineage can allow', async () => {
    const ctx = context([here]);
    await expect(resolveInputKeys(ctx, event({ files: [`${upstream}0_1.parquet`, '/etc/passwd'] }), 'sql')).rejects.toThrow('"/etc/passwd" is not a dataset file key');
    expect(ctx.asked).toBe(0);
  });
});

describe('assertOutputLocation', () => {
  const output = (over: Partial<OutputRef>): OutputRef => ({ index: 0, dataset_uuid: DS, dataset_version: V, location: here, backend: 's3', update_strategy: 'replace', unique_key: null, cursor: null, ...over });

  it('accepts the output version\'s own location, for files and for tables', () => {
    expect(assertOutputLocation(output({}), ORG, 'sql')).toBe(here);
    const table = `"ds_${DS.replace(/-/g, '')}"."v_${V.replace(/-/g, '')}"`;
    expect(assertOutputLocation(output({ backend: 'postgres', location: table }), ORG, 'sql')).toBe(table);
  });

  it('refuses any other location', () => {
    expect(() => assertOutputLocation(output({ location: upstream }), ORG, 'sql')).toThrow('sql: output 0 has location');
    expect(() => assertOutputLocation(output({}), OTHER_ORG, 'sql')).toThrow('not its dataset version\'s own');
    expect(() => assertOutputLocation(output({ backend: 'postgres', location: '"public"."users"' }), ORG, 'sql')).toThrow('not its dataset version\'s own');
    expect(() => assertOutputLocation(output({ dataset_version: null }), ORG, 'sql')).toThrow('(none)');
  });
});
