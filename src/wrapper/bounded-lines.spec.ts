import { BoundedLines } from './task-runner';

describe('BoundedLines', () => {
  const collect = (maxLine: number, maxTotal: number, chunks: string[]) => {
    const lines: string[] = [];
    const overflows: string[] = [];
    const b = new BoundedLines(maxLine, maxTotal, (l) => lines.push(l), (r) => overflows.push(r));
    for (const c of chunks) b.push(Buffer.from(c));
    b.end();
    return { lines, overflows };
  };

  it('splits lines across chunk boundaries, keeps multi-byte characters whole, and ends with the last unterminated line', () => {
    const euro = Buffer.from('€');
    const lines: string[] = [];
    const b = new BoundedLines(100, 1000, (l) => lines.push(l), () => undefined);
    b.push(Buffer.from('{"a":1}\n{"b":"'));
    b.push(euro.subarray(0, 1));
    b.push(Buffer.concat([euro.subarray(1), Buffer.from('"}\n\n{"c":3}')]));
    b.end();
    expect(lines).toEqual(['{"a":1}', '{"b":"€"}', '{"c":3}']);
  });

  it('stops at a line longer than the cap, whether or not it ends, and reads nothing after', () => {
    expect(collect(10, 1000, ['0123456789A', '\n{"ok":1}\n'])).toEqual({ lines: [], overflows: [expect.stringMatching(/longer than 10 bytes/)] });
    expect(collect(10, 1000, ['ok\n01234', '567890123\n'])).toEqual({ lines: ['ok'], overflows: [expect.stringMatching(/longer than 10 bytes/)] });
  });

  it('stops when all of stdout passes its cap', () => {
    expect(collect(10, 12, ['1\n2\n3\n', '4\n5\n6\n', '7\n'])).toEqual({ lines: ['1', '2', '3', '4', '5', '6'], overflows: [expect.stringMatching(/more than 12 bytes to stdout/)] });
  });
});
