import { MAX_BODY_DEPTH } from '../../common/http/json-depth';
import { parseSpecText } from './dag-spec.parser';

const tooDeep = `spec nests lists and mappings more than ${MAX_BODY_DEPTH} levels deep; the limit is ${MAX_BODY_DEPTH}`;

describe('parseSpecText: nesting depth', () => {
  const flow = (levels: number) => `name: p\njobs: ${'['.repeat(levels)}${']'.repeat(levels)}\n`;

  it('accepts exactly the limit and refuses one level more, at the node that is too deep', () => {
    // The top-level mapping is level 1, so `jobs` may hold MAX_BODY_DEPTH - 1 levels.
    expect(parseSpecText(flow(MAX_BODY_DEPTH - 1)).violations).toEqual([]);
    expect(parseSpecText(flow(MAX_BODY_DEPTH)).violations).toEqual([{ path: '', reason: tooDeep, line: 2, column: 'jobs: '.length + MAX_BODY_DEPTH }]);
  });

  it('refuses deep block sequences, deep JSON text and input deep enough to exhaust the YAML composer the same way', () => {
    for (const text of [
      `name: p\njobs:\n${'- '.repeat(200)}x\n`,
      `name: p\njobs:\n${'- '.repeat(50_000)}x\n`,
      flow(5_000),
      flow(100_000),
      `{"name": "p", "jobs": ${'[{"a":'.repeat(3_000)}1${'}]'.repeat(3_000)}}`,
      `a: ${'{b: '.repeat(10_000)}1${'}'.repeat(10_000)}\n`,
    ]) {
      const { violations, value } = parseSpecText(text);
      expect(value).toBeUndefined();
      expect(violations).toEqual([expect.objectContaining({ path: '', reason: tooDeep })]);
    }
  });

  it('counts mapping keys and values inside the collection that holds them', () => {
    const mapping = (levels: number) => `name: p\nconfig: ${'{a: '.repeat(levels)}1${'}'.repeat(levels)}\n`;
    expect(parseSpecText(mapping(MAX_BODY_DEPTH - 1)).violations).toEqual([]);
    expect(parseSpecText(mapping(MAX_BODY_DEPTH)).violations).toEqual([expect.objectContaining({ reason: tooDeep })]);
  });
});
