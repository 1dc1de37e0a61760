import { isUtf8 } from 'node:buffer';

/**
 * The byte offset where `bytes` stop being valid UTF-8 (the first byte of the first ill-formed
 * sequence: a stray continuation byte, a truncated sequence, an overlong form, a surrogate, or a
 * code point above U+10FFFF), or -1 when they are valid. The common case is Node's own validator;
 * the offset is looked for only once it has said no.
 */
export function invalidUtf8At(bytes: Uint8Array): number {
  if (isUtf8(bytes)) return -1;
  const length = bytes.length;
  let i = 0;
  while (i < length) {
    const lead = bytes[i]!;
    if (lead < 0x80) {
      i++;
      continue;
    }
    // Unicode Table 3-7: the well-formed byte sequences.
    let continuation: number;
    let low = 0x80;
    let high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) continuation = 1;
    else if (lead >= 0xe0 && lead <= 0xef) {
      continuation = 2;
      if (lead === 0xe0) low = 0xa0;
      else if (lead === 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      continuation = 3;
      if (lead === 0xf0) low = 0x90;
      else if (lead === 0xf4) high = 0x8f;
    } else return i;
    const second = bytes[i + 1];
    if (second === undefined || second < low || second > high) return i;
    for (let k = 2; k <= continuation; k++) {
      const next = bytes[i + k];
      if (next === undefined || next < 0x80 || next > 0xbf) return i;
    }
    i += continuation + 1;
  }
  return -1;
}
