/**
 * `patternCovers(allowed, requested)`: every topic `requested` can match is matched by `allowed`.
 * Checked against `matchPattern` on generated patterns and topics, both ways: when it says
 * "covers", no topic of `requested` escapes `allowed`; when it says "does not cover", a topic that
 * escapes exists (found by trying the topics `requested` stands for).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { matchPattern, patternCovers } from '../src/model/topic.js';

/** Segments patterns are made of; `z` is a name no pattern uses, which a `*` or `>` may take. */
const LITERALS = ['a', 'b'] as const;
const TOPIC_SEGMENTS = [...LITERALS, 'z'] as const;

const patternArb = fc
  .tuple(
    fc.array(fc.constantFrom<string>(...LITERALS, '*'), { minLength: 0, maxLength: 4 }),
    fc.boolean(),
  )
  .filter(([segs, tail]) => segs.length > 0 || tail)
  .map(([segs, tail]) => (tail ? [...segs, '>'] : segs).join('.'));

/** A topic `pattern` matches: each `*` replaced by a segment, `>` by one to three. */
function instanceArb(pattern: string): fc.Arbitrary<string> {
  const segArb = fc.constantFrom<string>(...TOPIC_SEGMENTS);
  return fc
    .tuple(
      ...pattern
        .split('.')
        .map((s) =>
          s === '*'
            ? segArb.map((x) => [x])
            : s === '>'
              ? fc.array(segArb, { minLength: 1, maxLength: 3 })
              : fc.constant([s]),
        ),
    )
    .map((parts) => parts.flat().join('.'));
}

/**
 * Every topic `pattern` matches, with `*` taking each of {@link TOPIC_SEGMENTS} and `>` one or two
 * of them: enough to find a topic that escapes a pattern of these segments, if one exists.
 */
function instances(pattern: string): string[] {
  let out: string[][] = [[]];
  for (const s of pattern.split('.')) {
    const choices =
      s === '*'
        ? TOPIC_SEGMENTS.map((x) => [x])
        : s === '>'
          ? [
              ...TOPIC_SEGMENTS.map((x) => [x]),
              ...TOPIC_SEGMENTS.flatMap((x) => TOPIC_SEGMENTS.map((y) => [x, y])),
            ]
          : [[s]];
    out = out.flatMap((prefix) => choices.map((c) => [...prefix, ...c]));
  }
  return out.map((segs) => segs.join('.'));
}

describe('patternCovers', () => {
  it.each([
    ['chat.>', 'chat.*'],
    ['chat.>', 'chat.a.b'],
    ['chat.>', 'chat.>'],
    ['chat.>', 'chat.*.>'],
    ['chat.*', 'chat.a'],
    ['chat.*', 'chat.*'],
    ['chat.a', 'chat.a'],
    ['*.a', 'chat.a'],
    ['>', 'chat'],
    ['>', '>'],
    ['>', '*.*.>'],
    ['*.>', 'a.*.b'],
    ['a.*.>', 'a.b.>'],
  ])('%s covers %s', (allowed, requested) => {
    expect(patternCovers(allowed, requested)).toBe(true);
  });

  it.each([
    // A `*` or `>` stands for more names than a literal.
    ['chat.a', 'chat.*'],
    ['chat.*', 'chat.>'],
    ['chat.*.*', 'chat.>'],
    ['chat.*.>', 'chat.>'],
    ['a.*', '*.*'],
    ['*', '>'],
    // Different lengths and names.
    ['chat.>', 'chat'],
    ['chat.*', 'chat'],
    ['chat.*', 'chat.a.b'],
    ['chat.a', 'chat.a.b'],
    ['chat.a', 'chat.b'],
    ['chat.>', 'chats.a'],
    ['a.b.c', 'a.b'],
    // Not patterns at all.
    ['chat.>', ''],
    ['chat.>', 'chat..a'],
    ['chat.>.a', 'chat.a.a'],
    ['', 'chat'],
  ])('%s does not cover %s', (allowed, requested) => {
    expect(patternCovers(allowed, requested)).toBe(false);
  });

  it('when it covers, every topic the requested pattern matches is matched by the allowed one', () => {
    fc.assert(
      fc.property(
        patternArb,
        patternArb.chain((r) => fc.tuple(fc.constant(r), instanceArb(r))),
        (allowed, [requested, topic]) => {
          expect(matchPattern(requested, topic)).toBe(true);
          if (patternCovers(allowed, requested)) expect(matchPattern(allowed, topic)).toBe(true);
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('when it does not cover, some topic the requested pattern matches escapes the allowed one', () => {
    fc.assert(
      fc.property(patternArb, patternArb, (allowed, requested) => {
        const escapes = instances(requested).some((t) => !matchPattern(allowed, t));
        expect(patternCovers(allowed, requested)).toBe(!escapes);
      }),
      { numRuns: 3000 },
    );
  });

  it('on a topic it is matchPattern; every pattern covers itself; covering is transitive', () => {
    fc.assert(
      fc.property(patternArb, patternArb, patternArb, (a, b, c) => {
        expect(patternCovers(a, a)).toBe(true);
        for (const t of instances(b).slice(0, 20)) {
          expect(patternCovers(a, t)).toBe(matchPattern(a, t));
        }
        if (patternCovers(a, b) && patternCovers(b, c)) expect(patternCovers(a, c)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});
