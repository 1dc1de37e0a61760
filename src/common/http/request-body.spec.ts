import type { IncomingMessage, ServerResponse } from 'node:http';
import { TraceError } from '../errors';
import { MAX_BODY_DEPTH } from './json-depth';
import { assertJsonBody, verifyJsonBody, verifyTextBody } from './request-body';

const req = {} as IncomingMessage;
const res = {} as ServerResponse;
const refusal = (run: () => void): Pick<TraceError, 'status' | 'code' | 'message' | 'details'> | undefined => {
  try {
    run();
    return undefined;
  } catch (err) {
    const { status, code, message, details } = err as TraceError;
    return { status, code, message, details };
  }
};

describe('request body checks', () => {
  it('refuses JSON nested past the limit with a 400 naming the limit', () => {
    expect(refusal(() => assertJsonBody(Buffer.from(`{"a":${'['.repeat(MAX_BODY_DEPTH)}${']'.repeat(MAX_BODY_DEPTH)}}`)))).toEqual({
      status: 400,
      code: 'body_too_deep',
      message: `request body nests arrays and objects more than ${MAX_BODY_DEPTH} levels deep (level ${MAX_BODY_DEPTH + 1} opens at byte ${5 + MAX_BODY_DEPTH - 1}); the limit is ${MAX_BODY_DEPTH}`,
      details: { limit: MAX_BODY_DEPTH, offset: 5 + MAX_BODY_DEPTH - 1 },
    });
    expect(refusal(() => assertJsonBody(Buffer.from('{"a": [[1], {"b": "[[["}]}')))).toBeUndefined();
  });

  it('refuses bytes that are not UTF-8, in JSON and in text declared or defaulting to UTF-8', () => {
    const bad = Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]);
    const expected = { status: 400, code: 'invalid_utf8', message: 'request body is not valid UTF-8: byte 0xff at offset 2 does not start a valid UTF-8 sequence', details: { offset: 2 } };
    expect(refusal(() => verifyJsonBody(req, res, bad, 'utf-8'))).toEqual(expected);
    expect(refusal(() => verifyTextBody(req, res, bad, 'utf-8'))).toEqual(expected);
    // Text in a charset the request declares is decoded as declared.
    expect(refusal(() => verifyTextBody(req, res, bad, 'iso-8859-1'))).toBeUndefined();
  });

  it('refuses JSON in any charset but UTF-8 (RFC 8259)', () => {
    expect(refusal(() => verifyJsonBody(req, res, Buffer.from('{}', 'utf16le'), 'utf-16le'))).toMatchObject({ status: 415, code: 'unsupported_media_type' });
  });
});
