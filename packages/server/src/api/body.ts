/**
 * A publish body as the content-type parsers in `app.ts` hand it to the route: valid UTF-8 only
 * (never decoded with U+FFFD in place of bad bytes), JSON parsed by plain `JSON.parse`. Each event
 * is then checked by the one event validator (`parseEventInput`).
 */
import { isUtf8 } from 'node:buffer';
import { RillError } from '../model/errors.js';

/** A publish body as text: valid UTF-8 (a leading BOM dropped), or `invalid_json`. */
export function decodeUtf8Body(body: Buffer): string {
  if (!isUtf8(body)) throw new RillError('invalid_json', 'Body is not valid UTF-8');
  const text = body.toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** An `application/json` publish body, parsed. */
export function parseJsonBody(body: Buffer): unknown {
  const text = decodeUtf8Body(body);
  if (text.trim() === '') throw new RillError('invalid_json', 'Empty body');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new RillError('invalid_json', (err as Error).message);
  }
}
