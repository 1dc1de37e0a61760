import { isUtf8 } from 'node:buffer';
import { invalidUtf8At } from './utf8';

const hex = (s: string) => Buffer.from(s.replace(/ /g, ''), 'hex');

describe('invalidUtf8At', () => {
  it('accepts valid UTF-8, from ASCII to four-byte characters', () => {
    for (const text of ['', 'plain ascii', 'café', '日本語', '😀 and 𝄞', '\u0000\u007f\u0080\u07ff\u0800\uffff']) {
      expect(invalidUtf8At(Buffer.from(text, 'utf8'))).toBe(-1);
    }
  });

  it('names the first byte of the first ill-formed sequence', () => {
    const cases: [string, number][] = [
      ['41 e9 42', 1], // Latin-1 é
      ['41 80', 1], // a stray continuation byte
      ['41 c3', 1], // truncated at the end
      ['41 e6 97 41', 1], // truncated in the middle
      ['c0 af', 0], // overlong "/"
      ['e0 80 af', 0], // overlong, three bytes
      ['f0 80 80 af', 0], // overlong, four bytes
      ['ed a0 80', 0], // a UTF-16 surrogate
      ['f4 90 80 80', 0], // above U+10FFFF
      ['f5 80 80 80', 0],
      ['ff', 0],
      ['63 61 66 c3 a9 20 ff', 6], // after a valid é
    ];
    for (const [bytes, at] of cases) expect({ bytes, at: invalidUtf8At(hex(bytes)) }).toEqual({ bytes, at });
  });

  it('agrees with Node\'s validator on random bytes', () => {
    let seed = 11;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const pool = [0x41, 0x7f, 0x80, 0xbf, 0xc2, 0xc3, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xa0, 0x9f, 0x90, 0x8f, 0xf5, 0xff];
    for (let i = 0; i < 5000; i++) {
      const bytes = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 8) }, () => pool[Math.floor(random() * pool.length)]!));
      const at = invalidUtf8At(bytes);
      expect({ bytes: bytes.toString('hex'), valid: at === -1 }).toEqual({ bytes: bytes.toString('hex'), valid: isUtf8(bytes) });
      if (at >= 0) {
        expect(isUtf8(bytes.subarray(0, at))).toBe(true);
      }
    }
  });
});
