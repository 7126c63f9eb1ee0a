import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { thrown } from '@rill/testkit';
import { RillError } from '../src/model/errors.js';
import {
  MAX_TOPIC_LENGTH,
  assertPattern,
  assertTopic,
  compilePattern,
  isPattern,
  isTopic,
  isValidPattern,
  matchPattern,
} from '../src/model/topic.js';

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const segmentArb = fc.stringMatching(/^[A-Za-z0-9_~-]{1,12}$/);
const segmentsArb = fc.array(segmentArb, { minLength: 1, maxLength: 8 });
const topicArb = segmentsArb.map((s) => s.join('.'));

/** A tiny alphabet so that generated patterns and topics collide often. */
const smallSegmentArb = fc.constantFrom('a', 'b', 'c');
const smallTopicArb = fc
  .array(smallSegmentArb, { minLength: 1, maxLength: 5 })
  .map((s) => s.join('.'));
const smallPatternArb = fc
  .tuple(
    fc.array(fc.oneof(smallSegmentArb, fc.constant('*')), { minLength: 0, maxLength: 5 }),
    fc.boolean(),
  )
  .filter(([segs, tail]) => segs.length > 0 || tail)
  .map(([segs, tail]) => (tail ? [...segs, '>'] : segs).join('.'));

/** An independent reference for NATS-style matching, segment by segment. */
function referenceMatch(pattern: string[], topic: string[]): boolean {
  if (pattern.length === 0) return topic.length === 0;
  const [p, ...restP] = pattern;
  if (p === '>') return restP.length === 0 && topic.length >= 1;
  if (topic.length === 0) return false;
  const [t, ...restT] = topic;
  if (p !== '*' && p !== t) return false;
  return referenceMatch(restP, restT);
}

// ---------------------------------------------------------------------------------------------
// Topic names
// ---------------------------------------------------------------------------------------------

describe('isTopic / assertTopic', () => {
  const valid: string[] = [
    'a',
    'orders',
    'prices.BTC-USD',
    'chat.room-1',
    'a_b~c-d',
    '0',
    '-',
    '~',
    '_',
    'A.b.C.d',
    'a.b.c.d.e.f.g.h',
    '123.456',
    'x'.repeat(MAX_TOPIC_LENGTH),
    'a.'.repeat(99) + 'aa', // 200 chars, many segments
  ];

  const invalid: string[] = [
    '',
    'x'.repeat(MAX_TOPIC_LENGTH + 1),
    'a.'.repeat(100) + 'a', // 201 chars
    '.',
    '..',
    '.a',
    'a.',
    'a..b',
    'a b',
    ' a',
    'a ',
    'a/b',
    'a:b',
    'a,b',
    'a@b',
    'a#b',
    'a+b',
    'a%2Eb',
    'a*',
    '*',
    '>',
    'a.*',
    'a.>',
    'café',
    'ü',
    '日本',
    '😀',
    'a\n',
    '\na',
    'a\r',
    'a\0',
    'a\u2028',
    'a\tb',
  ];

  it('has the documented maximum length of 200', () => {
    expect(MAX_TOPIC_LENGTH).toBe(200);
  });

  it.each(valid.map((t) => [t]))('accepts %j', (t) => {
    expect(isTopic(t)).toBe(true);
    expect(assertTopic(t)).toBe(t);
  });

  it.each(invalid.map((t) => [t]))('rejects %j', (t) => {
    expect(isTopic(t)).toBe(false);
    const err = thrown(() => assertTopic(t));
    expect(err).toBeInstanceOf(RillError);
    expect((err as RillError).code).toBe('invalid_topic');
  });

  it('accepts exactly 200 characters and rejects 201', () => {
    expect(isTopic('a'.repeat(200))).toBe(true);
    expect(isTopic('a'.repeat(201))).toBe(false);
  });

  it('property: generated topics are valid', () => {
    fc.assert(
      fc.property(topicArb, (t) => {
        expect(isTopic(t)).toBe(true);
        expect(isValidPattern(t)).toBe(true);
        expect(isPattern(t)).toBe(false);
      }),
    );
  });

  it('property: a topic with an empty segment is invalid', () => {
    fc.assert(
      fc.property(segmentsArb, fc.nat(), (segs, at) => {
        const i = at % (segs.length + 1);
        const withEmpty = [...segs.slice(0, i), '', ...segs.slice(i)].join('.');
        expect(isTopic(withEmpty)).toBe(false);
        expect(isValidPattern(withEmpty)).toBe(false);
      }),
    );
  });

  it('property: a topic containing a character outside [A-Za-z0-9_.~-] is invalid', () => {
    const badChar = fc
      .string({ unit: 'binary', minLength: 1, maxLength: 1 })
      .filter((c) => !/^[A-Za-z0-9_.~-]$/.test(c));
    fc.assert(
      fc.property(topicArb, badChar, fc.nat(), (t, c, at) => {
        const i = at % (t.length + 1);
        const bad = t.slice(0, i) + c + t.slice(i);
        expect(isTopic(bad)).toBe(false);
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------------------------

describe('isPattern', () => {
  it.each([
    ['*', true],
    ['>', true],
    ['a.*', true],
    ['a.>', true],
    ['a.*.c', true],
    ['*.b', true],
    ['a', false],
    ['a.b', false],
    ['a*', false],
    ['a.b>', false],
    ['**', false],
    ['>>', false],
  ] as const)('isPattern(%j) is %s', (p, expected) => {
    expect(isPattern(p)).toBe(expected);
  });
});

describe('isValidPattern / assertPattern', () => {
  const valid: string[] = [
    '*',
    '>',
    'a.>',
    'a.*.c',
    '*.*',
    '*.>',
    '*.b.>',
    'chat.*',
    'prices.>',
    'a',
    'prices.BTC-USD',
    'x'.repeat(MAX_TOPIC_LENGTH),
    'a'.repeat(MAX_TOPIC_LENGTH - 2) + '.>',
  ];

  const invalid: string[] = [
    '',
    'x'.repeat(MAX_TOPIC_LENGTH + 1),
    'a'.repeat(MAX_TOPIC_LENGTH - 1) + '.>',
    '>.a',
    'a.>.b',
    '>.>',
    '>.*',
    'a.>>',
    'a.**',
    'a*',
    'a.b*',
    '*a',
    'a>',
    'a..b',
    '.',
    'a.',
    '.a',
    '.*',
    '*.',
    '.>',
    'a b',
    'a.* ',
    'café.*',
    'a.>\n',
    'a.*\0',
    'a.\u2028',
    'a:*',
  ];

  it.each(valid.map((p) => [p]))('accepts %j', (p) => {
    expect(isValidPattern(p)).toBe(true);
    expect(assertPattern(p)).toBe(p);
  });

  it.each(invalid.map((p) => [p]))('rejects %j', (p) => {
    expect(isValidPattern(p)).toBe(false);
    const err = thrown(() => assertPattern(p));
    expect(err).toBeInstanceOf(RillError);
    expect((err as RillError).code).toBe('invalid_pattern');
  });

  it('property: generated patterns are valid', () => {
    fc.assert(
      fc.property(smallPatternArb, (p) => {
        expect(isValidPattern(p)).toBe(true);
      }),
    );
  });

  it('property: `>` anywhere but last is invalid', () => {
    fc.assert(
      fc.property(segmentsArb, fc.nat(), (segs, at) => {
        const i = at % segs.length;
        const p = [...segs.slice(0, i), '>', ...segs.slice(i)].join('.');
        expect(isValidPattern(p)).toBe(false);
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

describe('matchPattern / compilePattern', () => {
  const table: [pattern: string, topic: string, expected: boolean][] = [
    ['a', 'a', true],
    ['a.b', 'a.b', true],
    ['a', 'A', false],
    ['a', 'ab', false],
    ['ab', 'a', false],
    ['a', 'a.b', false],
    ['a.b', 'a', false],
    ['a.b', 'a.bc', false],
    ['*', 'a', true],
    ['*', 'a.b', false],
    ['>', 'a', true],
    ['>', 'a.b.c', true],
    ['a.>', 'a', false],
    ['a.>', 'a.b', true],
    ['a.>', 'a.b.c', true],
    ['a.>', 'b.c', false],
    ['a.>', 'ab.c', false],
    ['a.b.>', 'a.b', false],
    ['a.b.>', 'a.c.d', false],
    ['a.*', 'a', false],
    ['a.*', 'a.b', true],
    ['a.*', 'a.b.c', false],
    ['*.b', 'a.b', true],
    ['*.b', 'a.c', false],
    ['*.*', 'a.b', true],
    ['*.*', 'a', false],
    ['*.*', 'a.b.c', false],
    ['*.>', 'a', false],
    ['*.>', 'a.b', true],
    ['*.>', 'a.b.c', true],
    ['a.*.c', 'a.b.c', true],
    ['a.*.c', 'a.c', false],
    ['a.*.c', 'a.b.b.c', false],
    ['a.*.c', 'a.b.d', false],
    ['a.*.c', 'x.b.c', false],
    ['chat.*', 'chat.room-1', true],
    ['chat.*', 'chat', false],
    ['prices.>', 'prices.BTC-USD', true],
    ['prices.>', 'prices', false],
  ];

  it.each(table)('matchPattern(%j, %j) is %s', (p, t, expected) => {
    expect(matchPattern(p, t)).toBe(expected);
    expect(compilePattern(p)(t)).toBe(expected);
  });

  it('a compiled literal pattern matches only that exact topic', () => {
    const m = compilePattern('a.b');
    expect(m('a.b')).toBe(true);
    expect(m('a.b.c')).toBe(false);
    expect(m('a')).toBe(false);
    expect(m('A.b')).toBe(false);
  });

  it('property: a topic matches itself', () => {
    fc.assert(
      fc.property(topicArb, (t) => {
        expect(matchPattern(t, t)).toBe(true);
        expect(compilePattern(t)(t)).toBe(true);
      }),
    );
  });

  it('property: a topic matches `>` appended to any proper prefix of its segments', () => {
    fc.assert(
      fc.property(segmentsArb, (segs) => {
        const t = segs.join('.');
        for (let k = 0; k < segs.length; k++) {
          const p = [...segs.slice(0, k), '>'].join('.');
          expect(isValidPattern(p)).toBe(true);
          expect(matchPattern(p, t)).toBe(true);
          expect(compilePattern(p)(t)).toBe(true);
        }
        // `>` needs at least one more segment: `<topic>.>` does not match the topic itself.
        const whole = `${t}.>`;
        expect(matchPattern(whole, t)).toBe(false);
        expect(compilePattern(whole)(t)).toBe(false);
      }),
    );
  });

  it('property: `>` prefixes of a topic do not match a topic with a different first segment', () => {
    fc.assert(
      fc.property(segmentsArb, segmentArb, (segs, other) => {
        fc.pre(other !== segs[0]);
        const t = [other, ...segs.slice(1)].join('.');
        for (let k = 1; k < segs.length; k++) {
          const p = [...segs.slice(0, k), '>'].join('.');
          expect(matchPattern(p, t)).toBe(false);
        }
      }),
    );
  });

  it('property: replacing random segments with `*` still matches', () => {
    fc.assert(
      fc.property(
        segmentsArb.chain((segs) =>
          fc.tuple(
            fc.constant(segs),
            fc.array(fc.boolean(), { minLength: segs.length, maxLength: segs.length }),
          ),
        ),
        ([segs, mask]) => {
          const t = segs.join('.');
          const p = segs.map((s, i) => (mask[i] ? '*' : s)).join('.');
          expect(isValidPattern(p)).toBe(true);
          expect(matchPattern(p, t)).toBe(true);
          expect(compilePattern(p)(t)).toBe(true);
          // `*` is exactly one segment: one more or one fewer segment never matches.
          expect(matchPattern(p, `${t}.x`)).toBe(false);
          if (segs.length > 1) expect(matchPattern(p, segs.slice(0, -1).join('.'))).toBe(false);
        },
      ),
    );
  });

  it('property: replacing a segment with a different literal does not match', () => {
    fc.assert(
      fc.property(
        segmentsArb.chain((segs) =>
          fc.tuple(
            fc.constant(segs),
            fc.array(fc.boolean(), { minLength: segs.length, maxLength: segs.length }),
            fc.nat({ max: segs.length - 1 }),
            segmentArb,
          ),
        ),
        ([segs, mask, at, other]) => {
          fc.pre(other !== segs[at]);
          const t = segs.join('.');
          // Other segments may be wildcards; the replaced one is a mismatching literal.
          const p = segs.map((s, i) => (i === at ? other : mask[i] ? '*' : s)).join('.');
          expect(matchPattern(p, t)).toBe(false);
          expect(compilePattern(p)(t)).toBe(false);
        },
      ),
    );
  });

  it('property: matchPattern agrees with a reference implementation', () => {
    fc.assert(
      fc.property(smallPatternArb, smallTopicArb, (p, t) => {
        expect(matchPattern(p, t)).toBe(referenceMatch(p.split('.'), t.split('.')));
      }),
      { numRuns: 2000 },
    );
  });

  it('property: compilePattern agrees with matchPattern', () => {
    fc.assert(
      fc.property(
        fc.oneof(smallPatternArb, smallTopicArb),
        fc.array(smallTopicArb, { maxLength: 10 }),
        (p, topics) => {
          const m = compilePattern(p);
          for (const t of topics) expect(m(t)).toBe(matchPattern(p, t));
        },
      ),
      { numRuns: 1000 },
    );
  });
});
