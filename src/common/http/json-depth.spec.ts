import { jsonDepthExceededAt, MAX_BODY_DEPTH } from './json-depth';

const bytes = (text: string) => Buffer.from(text, 'utf8');
const nested = (n: number) => '['.repeat(n) + ']'.repeat(n);

/** The depth of a parsed value, for comparison: 0 for a scalar. */
function depthOf(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    max = Math.max(max, d + 1);
    for (const child of Object.values(v as object)) stack.push([child, d + 1]);
  }
  return max;
}

describe('jsonDepthExceededAt', () => {
  it('accepts exactly the limit and names the bracket that opens the level past it', () => {
    expect(jsonDepthExceededAt(bytes(nested(MAX_BODY_DEPTH)))).toBe(-1);
    expect(jsonDepthExceededAt(bytes(nested(MAX_BODY_DEPTH + 1)))).toBe(MAX_BODY_DEPTH);
    const five = `{"a": {"b": [1, {"c": []}]}}`;
    expect(jsonDepthExceededAt(bytes(five), 5)).toBe(-1);
    expect(jsonDepthExceededAt(bytes(five), 4)).toBe(`{"a": {"b": [1, {"c": `.length);
    expect(jsonDepthExceededAt(bytes(five), 2)).toBe(`{"a": {"b": `.length);
    expect(jsonDepthExceededAt(bytes('[]'), 0)).toBe(0);
    expect(jsonDepthExceededAt(bytes('"just [a] string"'), 0)).toBe(-1);
  });

  it('counts siblings once: depth is nesting, not the number of brackets', () => {
    expect(jsonDepthExceededAt(bytes(`[${Array.from({ length: 10_000 }, () => '[{}]').join(',')}]`), 3)).toBe(-1);
  });

  it('ignores brackets and escaped quotes inside strings, keys included', () => {
    const text = JSON.stringify({ '[[[[': '{{{{"\\"[[[', s: '\\', t: ['"]]]]'], u: 'é[ü{' });
    expect(jsonDepthExceededAt(bytes(text), 2)).toBe(-1);
    expect(jsonDepthExceededAt(bytes(text), 1)).toBe(text.indexOf('"t":[') + 4);
  });

  it('is not fooled by multi-byte UTF-8 characters', () => {
    // Every byte of a multi-byte character is >= 0x80, never a bracket or a quote.
    const text = JSON.stringify({ a: ['日本語', '😀', 'Ÿ'] });
    expect(jsonDepthExceededAt(bytes(text), 2)).toBe(-1);
    expect(jsonDepthExceededAt(bytes(text), 1)).toBe(Buffer.byteLength('{"a":'));
  });

  it('agrees with the parsed depth on random JSON', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const value = (d: number): unknown => {
      const r = random();
      if (d === 0 || r < 0.3) return [1, 'x[', '"}', null, true, 'ß{'][Math.floor(random() * 6)];
      const n = Math.floor(random() * 4);
      return r < 0.65 ? Array.from({ length: n }, () => value(d - 1)) : Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}[`, value(d - 1)]));
    };
    for (let i = 0; i < 500; i++) {
      const v = value(12);
      const text = bytes(JSON.stringify(v));
      const depth = depthOf(v);
      expect(jsonDepthExceededAt(text, depth)).toBe(-1);
      if (depth > 0) expect(jsonDepthExceededAt(text, depth - 1)).toBeGreaterThanOrEqual(0);
    }
  });

  it('scans a 1 MiB body in one linear pass, without recursion', () => {
    const huge = bytes(nested(512 * 1024));
    const started = process.hrtime.bigint();
    expect(jsonDepthExceededAt(huge, huge.length)).toBe(-1);
    expect(jsonDepthExceededAt(huge)).toBe(MAX_BODY_DEPTH);
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(500);
  });
});
