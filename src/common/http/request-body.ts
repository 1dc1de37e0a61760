import { HttpStatus } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { badRequest, TraceError } from '../errors';
import { jsonDepthExceededAt, MAX_BODY_DEPTH } from './json-depth';
import { invalidUtf8At } from './utf8';

/**
 * The checks every request body gets on its raw bytes, before anything parses it: once in
 * Express's body parsers (main.ts) and once on the hot internal routes that read their bodies
 * themselves (InternalFastPath), so both answer alike.
 */

/** Text declared (or defaulting to) UTF-8 must be UTF-8; nothing replaces bad bytes silently. */
export function assertUtf8Body(bytes: Uint8Array): void {
  const at = invalidUtf8At(bytes);
  if (at < 0) return;
  const byte = bytes[at]!.toString(16).padStart(2, '0');
  throw badRequest('invalid_utf8', `request body is not valid UTF-8: byte 0x${byte} at offset ${at} does not start a valid UTF-8 sequence`, { offset: at });
}

/** A JSON body: UTF-8, nested at most MAX_BODY_DEPTH levels. */
export function assertJsonBody(bytes: Uint8Array): void {
  assertUtf8Body(bytes);
  const at = jsonDepthExceededAt(bytes, MAX_BODY_DEPTH);
  if (at >= 0) {
    throw badRequest(
      'body_too_deep',
      `request body nests arrays and objects more than ${MAX_BODY_DEPTH} levels deep (level ${MAX_BODY_DEPTH + 1} opens at byte ${at}); the limit is ${MAX_BODY_DEPTH}`,
      { limit: MAX_BODY_DEPTH, offset: at },
    );
  }
}

const isUtf8Charset = (charset: string | undefined) => charset === undefined || charset === 'utf-8' || charset === 'utf8';

type Verify = (req: IncomingMessage, res: ServerResponse, body: Buffer, encoding: string) => void;

/**
 * body-parser's `verify` for JSON: runs on the raw bytes before JSON.parse. JSON between systems
 * is UTF-8 (RFC 8259 §8.1), so another declared charset is refused rather than decoded.
 */
export const verifyJsonBody: Verify = (_req, _res, body, encoding) => {
  if (!isUtf8Charset(encoding)) {
    throw new TraceError(HttpStatus.UNSUPPORTED_MEDIA_TYPE, 'unsupported_media_type', `JSON request bodies must be UTF-8; got charset "${encoding}"`);
  }
  assertJsonBody(body);
};

/** body-parser's `verify` for text (YAML DAG specs): UTF-8 unless the request declares another charset. */
export const verifyTextBody: Verify = (_req, _res, body, encoding) => {
  if (isUtf8Charset(encoding)) assertUtf8Body(body);
};
