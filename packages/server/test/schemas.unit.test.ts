import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RillError } from '../src/model/errors.js';
import { formatQuery } from '../src/api/stream.js';
import { presenceQuery } from '../src/api/presence.js';
import {
  fromQuery,
  limitQuery,
  patternQuery,
  prefixQuery,
  PURGE_BODY,
  RETENTION_BODY,
  sinceQuery,
  topicParam,
  waitQuery,
  type Check,
  type Field,
} from '../src/api/schemas.js';
import { parsePurgeBody, parseRetentionBody } from '../src/api/topic-admin.js';
import { requestAjv } from '../src/api/validation.js';

/**
 * A route schema and the field's own parser agree: the schema never refuses a value the parser
 * accepts (so a refusal is always answered with the parser's code and message), and where the
 * schema states the whole rule it accepts exactly what the parser accepts (so the API description
 * tells the truth).
 */

const ajv = requestAjv();

/** The parser's verdict: accepted, or refused with a catalogue error. */
function verdict(check: Check, v: unknown): boolean {
  try {
    check(v);
    return true;
  } catch (e) {
    expect(e).toBeInstanceOf(RillError);
    return false;
  }
}

/** Text that often looks like what a field takes, and often just misses. */
const near = fc.string({
  unit: fc.constantFrom(
    ...'0123456789abcwnoearlistT:Z-.~_*> ,é\n\u0000%'.split(''),
    '😀',
    '60',
    '.5',
  ),
  maxLength: 30,
});
const anyText = fc.oneof(
  near,
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.integer({ min: 195, max: 205 }).map((n) => 'a'.repeat(n)),
  fc.integer({ min: 0, max: 99_999_999 }).map(String),
  fc.double({ min: 0, max: 70, noNaN: true }).map(String),
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.constantFrom('', 'now', 'earliest', 'sse', 'ndjson', 'true', '1', '0', '60', '60.0', '0060'),
);

const exact: [string, Field][] = [
  ['topic', topicParam],
  ['limit', limitQuery(100, 1000)],
  ['wait', waitQuery],
  ['from', fromQuery],
  ['prefix', prefixQuery('prefix', '')],
  ['pattern', patternQuery],
  ['format', formatQuery],
  ['presence', presenceQuery],
];

describe('query and path fields: the schema says what the parser checks', () => {
  it.each(exact)('%s: the same verdict', (_name, field) => {
    const valid = ajv.compile(field.schema);
    fc.assert(
      fc.property(anyText, (v) => {
        expect(valid(v), JSON.stringify(v)).toBe(verdict(field.check, v));
      }),
      { numRuns: 500 },
    );
  });

  it('since: the schema lets through only what may parse, the parser decides the rest', () => {
    const valid = ajv.compile(sinceQuery.schema);
    fc.assert(
      fc.property(anyText, (v) => {
        if (!valid(v)) expect(verdict(sinceQuery.check, v), JSON.stringify(v)).toBe(false);
      }),
      { numRuns: 500 },
    );
    expect(valid('2026-13-45T00:00:00Z')).toBe(true);
    expect(verdict(sinceQuery.check, '2026-13-45T00:00:00Z')).toBe(false);
  });
});

describe('admin bodies: a refused body is one the route refuses', () => {
  const value = fc.oneof(
    fc.integer({ min: -5, max: 1e6 }),
    fc.double(),
    fc.constantFrom('1h', '10MB', 'x', '', '2026-01-01T00:00:00Z', null, true),
    fc.array(fc.integer(), { maxLength: 2 }),
  );
  const body = (keys: string[]) =>
    fc.oneof(
      fc.dictionary(fc.constantFrom(...keys, 'other'), value, { maxKeys: 3 }),
      fc.jsonValue(),
    );

  it.each([
    ['retention', RETENTION_BODY, parseRetentionBody, ['maxEvents', 'maxAge', 'maxBytes']],
    ['purge', PURGE_BODY, parsePurgeBody, ['before', 'beforeTime']],
  ] as const)('%s', (_name, schema, parse, keys) => {
    const valid = ajv.compile(schema);
    fc.assert(
      fc.property(body([...keys]), (b) => {
        if (!valid(b)) expect(verdict(parse, b), JSON.stringify(b)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });
});
