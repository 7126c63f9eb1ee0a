/**
 * One encoding of an error on every transport: an HTTP body's `error`, an SSE `error` frame's
 * data, an NDJSON error line's `error` and a WebSocket `error` message's `error` are the same
 * object, details included.
 */
import { describe, expect, it } from 'vitest';
import { ERRORS, RillError, type ErrorCode } from '../src/model/errors.js';
import { ndjsonFraming } from '../src/wire/ndjson.js';
import { sseErrorFrame } from '../src/wire/sse.js';
import { wsErrorFrame } from '../src/wire/ws.js';

function sseData(frame: string): unknown {
  const lines = frame.split('\n');
  expect(lines[0]).toBe('event: error');
  return JSON.parse(
    lines
      .filter((l) => l.startsWith('data: '))
      .map((l) => l.slice(6))
      .join('\n'),
  );
}

describe('error encoding', () => {
  const codes = Object.keys(ERRORS) as ErrorCode[];

  it.each(codes)('%s encodes the same on HTTP, SSE, NDJSON and WebSocket', (code) => {
    const err = new RillError(code, `message of ${code}`, { details: { limit: 7 } });
    const expected = {
      code,
      message: `message of ${code}`,
      retryable: ERRORS[code].retryable,
      closeCode: ERRORS[code].close,
      limit: 7,
    };
    const http = JSON.parse(JSON.stringify(err.toJSON())) as { error: unknown };
    expect(http).toEqual({ error: expected });
    expect(sseData(sseErrorFrame(err))).toEqual(expected);
    const line = ndjsonFraming().error(err);
    expect(line.endsWith('\n')).toBe(true);
    expect(JSON.parse(line)).toEqual({ error: expected });
    expect(JSON.parse(wsErrorFrame(err, { id: 3, sub: 's1' }))).toEqual({
      op: 'error',
      id: 3,
      sub: 's1',
      error: expected,
    });
  });

  it('details never replace the fixed fields', () => {
    const err = new RillError('forbidden', 'no', { details: { code: 'other', retryable: true } });
    expect(err.body()).toMatchObject({ code: 'forbidden', retryable: false });
  });
});
