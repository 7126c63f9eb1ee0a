import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { thrown } from '@rill/testkit';
import {
  DEFAULT_MAX_CURSOR_LENGTH,
  decodeCursor,
  encodeCursor,
  encodePosition,
  isEpoch,
  type Cursor,
  type Position,
} from '../src/model/cursor.js';
import { RillError } from '../src/model/errors.js';
import { isTopic } from '../src/model/topic.js';

function expectInvalidCursor(fn: () => unknown): void {
  const err = thrown(fn);
  expect(err).toBeInstanceOf(RillError);
  expect((err as RillError).code).toBe('invalid_cursor');
  expect((err as RillError).status).toBe(400);
}

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const segmentArb = fc.stringMatching(/^[A-Za-z0-9_~-]{1,12}$/);
const shortTopicArb = fc.array(segmentArb, { minLength: 1, maxLength: 6 }).map((s) => s.join('.'));
const longTopicArb = fc.stringMatching(/^[A-Za-z0-9_~-]{150,200}$/);
const topicArb = fc.oneof({ weight: 4, arbitrary: shortTopicArb }, longTopicArb);
const epochArb = fc.stringMatching(/^[A-Za-z0-9]{1,32}$/);
const seqArb = fc.oneof(fc.constantFrom(0, 1, Number.MAX_SAFE_INTEGER), fc.nat(), fc.maxSafeNat());
const positionArb: fc.Arbitrary<Position> = fc.record({ epoch: epochArb, seq: seqArb });

const cursorArb: fc.Arbitrary<Cursor> = fc
  .record({
    entries: fc.uniqueArray(fc.tuple(topicArb, positionArb), {
      selector: ([t]) => t,
      maxLength: 12,
    }),
    watermark: fc.option(fc.oneof(fc.nat(), fc.maxSafeNat()), { nil: undefined }),
  })
  // An empty cursor encodes to the empty string, which is not a cursor (see the dedicated test).
  .filter(({ entries, watermark }) => entries.length > 0 || watermark !== undefined)
  .map(({ entries, watermark }) => {
    const c: Cursor = { positions: new Map(entries) };
    if (watermark !== undefined) c.watermark = watermark;
    return c;
  });

/** Strings built from the cursor alphabet and its near misses, to reach deep parser paths. */
const cursorishArb = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        ':',
        ',',
        '@',
        '.',
        '-',
        '0',
        '1',
        '9',
        'a',
        'Z',
        ' ',
        '\n',
        '\r',
        '\0',
        '*',
        'é',
        '9007199254740992',
        '9007199254740991',
        '-1',
        '01',
        '1.5',
        '1e3',
      ),
      segmentArb,
      epochArb,
    ),
    { maxLength: 30 },
  )
  .map((parts) => parts.join(''));

// ---------------------------------------------------------------------------------------------
// isEpoch / encodePosition
// ---------------------------------------------------------------------------------------------

describe('isEpoch', () => {
  it.each([['a'], ['Z'], ['0'], ['abc123XYZ'], ['e'.repeat(32)]])('accepts %j', (e) => {
    expect(isEpoch(e)).toBe(true);
  });

  it.each([
    [''],
    ['e'.repeat(33)],
    ['a-b'],
    ['a_b'],
    ['a.b'],
    ['a:b'],
    ['a,b'],
    ['a b'],
    ['é'],
    ['a\n'],
    ['\na'],
    ['a\0'],
  ])('rejects %j', (e) => {
    expect(isEpoch(e)).toBe(false);
  });
});

describe('encodePosition', () => {
  it('is topic:epoch:seq', () => {
    expect(encodePosition('orders', 'e1', 42)).toBe('orders:e1:42');
    expect(encodePosition('prices.BTC-USD', 'X', 0)).toBe('prices.BTC-USD:X:0');
  });

  it('property: decodes to a one-topic cursor', () => {
    fc.assert(
      fc.property(topicArb, epochArb, seqArb, (topic, epoch, seq) => {
        const c = decodeCursor(encodePosition(topic, epoch, seq));
        expect([...c.positions]).toEqual([[topic, { epoch, seq }]]);
        expect(c.watermark).toBeUndefined();
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// encodeCursor / decodeCursor
// ---------------------------------------------------------------------------------------------

describe('encodeCursor', () => {
  it('lists topics in map order, then the watermark', () => {
    const c: Cursor = {
      positions: new Map([
        ['b', { epoch: 'E', seq: 2 }],
        ['a.x', { epoch: 'F1', seq: 0 }],
      ]),
      watermark: 1700000000000,
    };
    expect(encodeCursor(c)).toBe('b:E:2,a.x:F1:0,@1700000000000');
  });

  it('encodes a watermark-only cursor', () => {
    expect(encodeCursor({ positions: new Map(), watermark: 0 })).toBe('@0');
  });

  it('encodes an empty cursor as the empty string, which does not decode', () => {
    const s = encodeCursor({ positions: new Map() });
    expect(s).toBe('');
    expectInvalidCursor(() => decodeCursor(s));
  });
});

describe('decodeCursor: valid input', () => {
  it.each<[string, [string, Position][], number | undefined]>([
    ['a:e:0', [['a', { epoch: 'e', seq: 0 }]], undefined],
    ['orders:Ab9:42', [['orders', { epoch: 'Ab9', seq: 42 }]], undefined],
    [
      'a.b:E1:5,c:x:0,@1700000000000',
      [
        ['a.b', { epoch: 'E1', seq: 5 }],
        ['c', { epoch: 'x', seq: 0 }],
      ],
      1700000000000,
    ],
    ['@0', [], 0],
    ['@1700000000000,a:e:1', [['a', { epoch: 'e', seq: 1 }]], 1700000000000],
    ['a:e:9007199254740991', [['a', { epoch: 'e', seq: Number.MAX_SAFE_INTEGER }]], undefined],
    [`${'t'.repeat(200)}:e:1`, [['t'.repeat(200), { epoch: 'e', seq: 1 }]], undefined],
    [`a:${'E'.repeat(32)}:1`, [['a', { epoch: 'E'.repeat(32), seq: 1 }]], undefined],
    [
      'a:e:1,A:e:2',
      [
        ['a', { epoch: 'e', seq: 1 }],
        ['A', { epoch: 'e', seq: 2 }],
      ],
      undefined,
    ],
  ])('decodes %j', (s, entries, watermark) => {
    const c = decodeCursor(s);
    expect(c.positions).toBeInstanceOf(Map);
    expect([...c.positions]).toEqual(entries);
    expect(c.watermark).toBe(watermark);
    if (watermark === undefined) expect('watermark' in c).toBe(false);
  });

  it('accepts a cursor exactly at the length limit and rejects one past it', () => {
    const s = 'a:e:1';
    expect(decodeCursor(s, s.length).positions.size).toBe(1);
    expectInvalidCursor(() => decodeCursor(s, s.length - 1));
  });

  it('has a 16 KiB default length limit', () => {
    expect(DEFAULT_MAX_CURSOR_LENGTH).toBe(16 * 1024);
    // Build a valid cursor of exactly the limit, then one character longer.
    const parts: string[] = [];
    let len = -1;
    for (let i = 0; len < DEFAULT_MAX_CURSOR_LENGTH - 100; i++) {
      const p = `t${i}:e:1`;
      parts.push(p);
      len += p.length + 1;
    }
    let s = parts.join(',');
    s += ',' + 'x'.repeat(DEFAULT_MAX_CURSOR_LENGTH - s.length - 5) + ':e:1';
    expect(s.length).toBe(DEFAULT_MAX_CURSOR_LENGTH);
    expect(decodeCursor(s).positions.size).toBe(parts.length + 1);
    expectInvalidCursor(() => decodeCursor(s + '0'));
  });
});

describe('decodeCursor: malformed input', () => {
  const malformed: [label: string, input: string][] = [
    ['empty', ''],
    ['too long', Array.from({ length: 3000 }, (_, i) => `t${i}:e:1`).join(',')],
    ['duplicated topic', 'a:e:1,a:e:2'],
    ['duplicated topic, other epoch', 'a:e:1,b:e:1,a:f:1'],
    ['empty epoch', 'a::1'],
    ['epoch with dash', 'a:e-1:1'],
    ['epoch with underscore', 'a:e_1:1'],
    ['epoch with dot', 'a:e.1:1'],
    ['epoch too long', `a:${'e'.repeat(33)}:1`],
    ['non-ascii epoch', 'a:é:1'],
    ['negative seq', 'a:e:-1'],
    ['non-integer seq', 'a:e:1.5'],
    ['exponent seq', 'a:e:1e3'],
    ['hex seq', 'a:e:0x10'],
    ['plus sign seq', 'a:e:+1'],
    ['leading-zero seq', 'a:e:01'],
    ['double zero seq', 'a:e:00'],
    ['unsafe seq (2^53)', 'a:e:9007199254740992'],
    ['too-large seq (17 digits)', 'a:e:12345678901234567'],
    ['huge seq', `a:e:${'9'.repeat(400)}`],
    ['Infinity seq', 'a:e:Infinity'],
    ['NaN seq', 'a:e:NaN'],
    ['empty seq', 'a:e:'],
    ['two watermarks', '@1,@2'],
    ['two watermarks around a topic', '@1,a:e:1,@2'],
    ['empty watermark', '@'],
    ['negative watermark', '@-1'],
    ['leading-zero watermark', '@01'],
    ['non-integer watermark', '@1.5'],
    ['non-numeric watermark', '@abc'],
    ['watermark with a topic', '@a:e:1'],
    ['topic only', 'a'],
    ['missing seq', 'a:e'],
    ['missing topic', ':e:1'],
    ['only colons', '::'],
    ['trailing comma', 'a:e:1,'],
    ['leading comma', ',a:e:1'],
    ['empty part', 'a:e:1,,b:e:2'],
    ['only a comma', ','],
    ['extra field', 'a:e:1:2'],
    ['extra colon', 'a:e::1'],
    ['leading colon', ':a:e:1'],
    ['leading space', ' a:e:1'],
    ['trailing space', 'a:e:1 '],
    ['space in topic', 'a b:e:1'],
    ['space after comma', 'a:e:1, b:e:2'],
    ['space in seq', 'a:e: 1'],
    ['bad topic: empty segment', 'a..b:e:1'],
    ['bad topic: leading dot', '.a:e:1'],
    ['bad topic: wildcard', 'a.*:e:1'],
    ['bad topic: >', '>:e:1'],
    ['bad topic: unicode', 'café:e:1'],
    ['bad topic: too long', `${'t'.repeat(201)}:e:1`],
    ['LF after seq', 'a:e:1\n'],
    ['CRLF header injection', 'a:e:1\r\nSet-Cookie: x=1'],
    ['SSE field injection', 'a:e:1\ndata: evil'],
    ['LF in topic', 'a\n:e:1'],
    ['LF in epoch', 'a:e\n:1'],
    ['CR in seq', 'a:e:1\r'],
    ['LF after watermark', '@1\n'],
    ['NUL after seq', 'a:e:1\0'],
    ['NUL in topic', 'a\0:e:1'],
    ['line separator', 'a:e:1\u2028'],
    ['JSON', '{"a":1}'],
    ['JSON array', '[["a","e",1]]'],
  ];

  it.each(malformed)('rejects %s', (_label, input) => {
    expectInvalidCursor(() => decodeCursor(input));
  });
});

describe('decodeCursor: properties', () => {
  it('property: decode(encode(c)) equals c', () => {
    fc.assert(
      fc.property(cursorArb, (c) => {
        const d = decodeCursor(encodeCursor(c));
        expect([...d.positions]).toEqual([...c.positions]);
        expect(d.watermark).toBe(c.watermark);
        expect('watermark' in d).toBe(c.watermark !== undefined);
      }),
      { numRuns: 500 },
    );
  });

  it('property: encode(decode(s)) equals s for an encoded cursor', () => {
    fc.assert(
      fc.property(cursorArb, (c) => {
        const s = encodeCursor(c);
        expect(encodeCursor(decodeCursor(s))).toBe(s);
      }),
    );
  });

  it('property: encodeCursor never contains CR, LF or NUL', () => {
    fc.assert(
      fc.property(cursorArb, (c) => {
        expect(encodeCursor(c)).not.toMatch(/[\r\n\0]/);
      }),
      { numRuns: 500 },
    );
  });

  it('property: a duplicated topic is rejected wherever it appears', () => {
    fc.assert(
      fc.property(cursorArb, positionArb, fc.nat(), (c, pos, at) => {
        fc.pre(c.positions.size > 0);
        const topics = [...c.positions.keys()];
        const dup = topics[at % topics.length] as string;
        const s = `${encodeCursor(c)},${encodePosition(dup, pos.epoch, pos.seq)}`;
        expectInvalidCursor(() => decodeCursor(s));
      }),
    );
  });

  it('property: on arbitrary strings, returns a valid cursor or throws invalid_cursor', () => {
    const check = (s: string): void => {
      let c: Cursor;
      try {
        c = decodeCursor(s);
      } catch (err) {
        expect(err).toBeInstanceOf(RillError);
        expect((err as RillError).code).toBe('invalid_cursor');
        return;
      }
      expect(c.positions).toBeInstanceOf(Map);
      for (const [topic, p] of c.positions) {
        expect(isTopic(topic)).toBe(true);
        expect(isEpoch(p.epoch)).toBe(true);
        expect(Number.isSafeInteger(p.seq) && p.seq >= 0).toBe(true);
      }
      if (c.watermark !== undefined) {
        expect(Number.isInteger(c.watermark) && c.watermark >= 0).toBe(true);
      }
    };
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), fc.string(), cursorishArb), check),
      { numRuns: 2000 },
    );
  });

  it('property: a valid cursor with an injected CR, LF or NUL is rejected', () => {
    fc.assert(
      fc.property(cursorArb, fc.constantFrom('\r', '\n', '\0', '\r\n'), fc.nat(), (c, ch, at) => {
        const s = encodeCursor(c);
        const i = at % (s.length + 1);
        expectInvalidCursor(() => decodeCursor(s.slice(0, i) + ch + s.slice(i)));
      }),
    );
  });
});

describe('decodeCursor: watermark bounds', () => {
  // BUG (reported): seq is checked with Number.isSafeInteger but the watermark is not, so
  // '@9999999999999999' decodes to 1e16, which re-encodes as '@10000000000000000' (17 digits)
  // and then fails to decode. Flip `it.fails` to `it` once the watermark is bounded like seq.
  it('rejects a watermark that is not a safe integer, like seq', () => {
    expectInvalidCursor(() => decodeCursor('@9999999999999999'));
  });

  it('accepts the largest safe watermark and round-trips it', () => {
    const s = `@${Number.MAX_SAFE_INTEGER}`;
    const c = decodeCursor(s);
    expect(c.watermark).toBe(Number.MAX_SAFE_INTEGER);
    expect(encodeCursor(c)).toBe(s);
  });
});
