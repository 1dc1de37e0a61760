/**
 * How deeply a request body may nest arrays and objects (a JSON body, or the lists and mappings
 * of a YAML DAG spec). `{}` is 1 level, `{"a": [1]}` 2. Far above anything Trace's own bodies
 * need, and far below the depth at which code that walks a value recursively (JSON.stringify,
 * class-transformer, the YAML composer) runs out of stack.
 */
export const MAX_BODY_DEPTH = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * The byte offset of the first `[` or `{` that opens a level deeper than `max`, or -1 when none
 * does. One pass over the raw UTF-8 text, before it is parsed, with no recursion: brackets inside
 * strings are skipped (a `\` escapes the byte after it), and every byte of a multi-byte UTF-8
 * character is ≥ 0x80, so none is mistaken for a bracket or a quote. For text that is valid JSON
 * the count is exactly the nesting depth; text that is not is refused by the parser anyway.
 */
export function jsonDepthExceededAt(bytes: Uint8Array, max = MAX_BODY_DEPTH): number {
  let depth = 0;
  let inString = false;
  const length = bytes.length;
  for (let i = 0; i < length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) inString = false;
    } else if (b === QUOTE) {
      inString = true;
    } else if (b === OPEN_ARRAY || b === OPEN_OBJECT) {
      if (++depth > max) return i;
    } else if (b === CLOSE_ARRAY || b === CLOSE_OBJECT) {
      depth--;
    }
  }
  return -1;
}
