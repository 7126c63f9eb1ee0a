import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { TopicHead } from '../src/engine/engine.js';
import type { Cursor, Position } from '../src/model/cursor.js';
import { decodeCursor } from '../src/model/cursor.js';
import { resumeIsExact, startCursor, WATERMARK_MARGIN_MS } from '../src/fanout/resume.js';
import type { StartSpec } from '../src/fanout/subscription.js';

function head(topic: string, epoch: string, firstSeq: number, lastSeq: number): TopicHead {
  return { topic, epoch, firstSeq, lastSeq, created: 1, lastTime: lastSeq > 0 ? 2 : 0 };
}

function cursor(positions: Record<string, Position>, watermark?: number): Cursor {
  return {
    positions: new Map(Object.entries(positions)),
    ...(watermark === undefined ? {} : { watermark }),
  };
}

const NOW: StartSpec = { kind: 'now' };
const EARLIEST: StartSpec = { kind: 'earliest' };
const T0 = 1_800_000_000_000;

describe('WATERMARK_MARGIN_MS', () => {
  it('is one second, as every cursor handed out so far assumed', () => {
    expect(WATERMARK_MARGIN_MS).toBe(1000);
  });
});

describe('resumeIsExact', () => {
  // Topic "a" retains seqs 11..20 in epoch E1: a position may be 10 (nothing handed over yet
  // that is still retained) up to 20 (everything).
  const heads = new Map<string, TopicHead | null>([
    ['a', head('a', 'E1', 11, 20)],
    ['gone', null],
  ]);

  it('is exact with no cursor and a start that is not a seq', () => {
    for (const start of [NOW, EARLIEST, { kind: 'time', time: 5 } as const]) {
      expect(resumeIsExact(['a', 'gone'], heads, start, undefined)).toBe(true);
    }
  });

  it.each([
    [10, true],
    [15, true],
    [20, true],
    [9, false], // retention dropped seq 10
    [21, false], // ahead of the log
  ])('with a cursor position %i in the same epoch: %s', (seq, exact) => {
    expect(resumeIsExact(['a'], heads, NOW, cursor({ a: { epoch: 'E1', seq } }))).toBe(exact);
  });

  it('is not exact for a position in another epoch, or in a topic that no longer exists', () => {
    expect(resumeIsExact(['a'], heads, NOW, cursor({ a: { epoch: 'E2', seq: 15 } }))).toBe(false);
    expect(resumeIsExact(['gone'], heads, NOW, cursor({ gone: { epoch: 'E1', seq: 0 } }))).toBe(
      false,
    );
    // A topic whose head was never read is as unknown as one that is gone.
    expect(resumeIsExact(['b'], heads, NOW, cursor({ b: { epoch: 'E1', seq: 0 } }))).toBe(false);
  });

  it.each([
    [10, true],
    [20, true],
    [9, false],
    [21, false],
  ])('with since=%i (a seq) and no cursor: %s', (seq, exact) => {
    expect(resumeIsExact(['a'], heads, { kind: 'after', seq }, undefined)).toBe(exact);
  });

  it('applies a seq start only to topics the cursor does not list, and not under a watermark', () => {
    const after: StartSpec = { kind: 'after', seq: 3 };
    // "a" listed in range: the seq start (out of range for "a") is not what "a" resumes from.
    expect(resumeIsExact(['a'], heads, after, cursor({ a: { epoch: 'E1', seq: 12 } }))).toBe(true);
    // A cursor with positions elsewhere still leaves "a" to the start.
    expect(resumeIsExact(['a'], heads, after, cursor({ x: { epoch: 'E1', seq: 1 } }))).toBe(false);
    // A watermark covers the unlisted topics instead of the start.
    expect(resumeIsExact(['a'], heads, after, cursor({}, 123))).toBe(true);
  });

  it('is exact for a seq start on a topic that does not exist yet', () => {
    expect(resumeIsExact(['gone', 'new'], heads, { kind: 'after', seq: 50 }, undefined)).toBe(true);
  });

  it('is not exact when any one topic is not', () => {
    const c = cursor({ a: { epoch: 'E1', seq: 15 }, gone: { epoch: 'E1', seq: 1 } });
    expect(resumeIsExact(['a'], heads, NOW, c)).toBe(true);
    expect(resumeIsExact(['a', 'gone'], heads, NOW, c)).toBe(false);
  });
});

describe('startCursor', () => {
  const before = new Map<string, TopicHead | null>([
    ['a', head('a', 'E1', 11, 20)],
    ['b', head('b', 'E2', 1, 4)],
    ['none', null],
  ]);
  const base = { before, cursor: undefined, pattern: false, t0: T0, maxTopics: 100 };

  it('lists plain topics at the position their start gives, with no watermark', () => {
    const topics = ['a', 'b'];
    expect(startCursor({ ...base, topics, start: NOW })).toBe('a:E1:20,b:E2:4');
    expect(startCursor({ ...base, topics, start: EARLIEST })).toBe('a:E1:10,b:E2:0');
    expect(startCursor({ ...base, topics, start: { kind: 'after', seq: 7 } })).toBe(
      'a:E1:7,b:E2:7',
    );
  });

  it('covers a time start with a watermark at that time', () => {
    expect(startCursor({ ...base, topics: ['a'], start: { kind: 'time', time: 5000 } })).toBe(
      '@5000',
    );
  });

  it.each([
    [NOW, T0 - 1000],
    [EARLIEST, 0],
    [{ kind: 'after', seq: 3 } as const, 0],
    [{ kind: 'time', time: 5000 } as const, 5000],
  ])('covers a topic with no head (start %j) by the watermark %i', (start, watermark) => {
    expect(startCursor({ ...base, topics: ['a', 'none'], start })).toMatch(
      new RegExp(`,@${watermark}$|^@${watermark}$`),
    );
  });

  it('covers a topic whose head was not read before (found by a pattern) by the watermark', () => {
    expect(startCursor({ ...base, topics: ['a', 'c.x'], start: NOW, pattern: true })).toBe(
      `a:E1:20,@${T0 - WATERMARK_MARGIN_MS}`,
    );
    expect(startCursor({ ...base, topics: ['c.x'], start: EARLIEST, pattern: true })).toBe('@0');
  });

  it('gives a pattern subscription a watermark even before any topic matched', () => {
    expect(startCursor({ ...base, topics: [], start: NOW, pattern: true })).toBe(
      `@${T0 - WATERMARK_MARGIN_MS}`,
    );
    expect(startCursor({ ...base, topics: [], start: NOW })).toBe('');
  });

  it('keeps the positions a cursor lists, whatever the start and heads say', () => {
    const c = cursor({ a: { epoch: 'OLD', seq: 3 } });
    expect(startCursor({ ...base, topics: ['a', 'b'], start: NOW, cursor: c })).toBe(
      'a:OLD:3,b:E2:4',
    );
  });

  it("covers topics a cursor does not list by the cursor's own watermark", () => {
    const c = cursor({ a: { epoch: 'E1', seq: 12 } }, 7777);
    // "b" has a head, but under a watermark its start is the watermark, not a position.
    expect(startCursor({ ...base, topics: ['a', 'b'], start: NOW, cursor: c })).toBe(
      'a:E1:12,@7777',
    );
    expect(startCursor({ ...base, topics: [], start: NOW, cursor: c, pattern: true })).toBe(
      '@7777',
    );
  });

  it('lists at most maxTopics, the rest falling to the watermark at their floor', () => {
    // Both "now": the dropped one resumes from a second before the subscription started.
    expect(startCursor({ ...base, topics: ['a', 'b'], start: NOW, maxTopics: 1 })).toBe(
      `a:E1:20,@${T0 - 1000}`,
    );
    // A dropped cursor position or earliest start can only be covered from the beginning.
    const c = cursor({ a: { epoch: 'E1', seq: 12 }, b: { epoch: 'E2', seq: 2 } });
    expect(startCursor({ ...base, topics: ['a', 'b'], start: NOW, cursor: c, maxTopics: 1 })).toBe(
      'a:E1:12,@0',
    );
    expect(startCursor({ ...base, topics: ['a', 'b'], start: EARLIEST, maxTopics: 0 })).toBe('@0');
  });

  it('never gives a negative watermark', () => {
    expect(startCursor({ ...base, topics: ['none'], start: NOW, t0: 300 })).toBe('@0');
  });

  it('never resumes past where the subscription starts (property)', () => {
    const topicArb = fc.constantFrom('a', 'b', 'c', 'd');
    const headArb = fc
      .tuple(fc.constantFrom('E1', 'E2'), fc.nat(50), fc.nat(50))
      .map(([epoch, first, len]) => ({ epoch, firstSeq: first + 1, lastSeq: first + len }));
    const startArb: fc.Arbitrary<StartSpec> = fc.oneof(
      fc.constant(NOW),
      fc.constant(EARLIEST),
      fc.nat(100).map((seq) => ({ kind: 'after', seq }) as const),
      fc.integer({ min: 0, max: T0 }).map((time) => ({ kind: 'time', time }) as const),
    );
    const cursorArb = fc.option(
      fc.record({
        positions: fc.dictionary(
          topicArb,
          fc.record({ epoch: fc.constantFrom('E1', 'E2'), seq: fc.nat(100) }),
        ),
        watermark: fc.option(fc.integer({ min: 0, max: T0 }), { nil: undefined }),
      }),
      { nil: undefined },
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(topicArb, { maxLength: 4 }),
        fc.dictionary(topicArb, fc.option(headArb, { nil: null })),
        startArb,
        cursorArb,
        fc.boolean(),
        fc.nat(4),
        (topics, heads, start, given, pattern, maxTopics) => {
          const before = new Map(
            Object.entries(heads).map(([t, h]) => [
              t,
              h && head(t, h.epoch, h.firstSeq, h.lastSeq),
            ]),
          );
          const c: Cursor | undefined = given && {
            positions: new Map(Object.entries(given.positions)),
            ...(given.watermark === undefined ? {} : { watermark: given.watermark }),
          };
          const text = startCursor({
            topics,
            before,
            start,
            cursor: c,
            pattern,
            t0: T0,
            maxTopics,
          });
          // Empty only when there is nothing to say: no topics, and no pattern to watch for more.
          if (text === '') expect(topics.length === 0 && !pattern).toBe(true);
          const out: Cursor = text === '' ? { positions: new Map() } : decodeCursor(text);
          expect(out.positions.size).toBeLessThanOrEqual(maxTopics);
          // The earliest time a topic with no listed position may still be owed an event from.
          const floor =
            c?.watermark ??
            (start.kind === 'now'
              ? T0 - WATERMARK_MARGIN_MS
              : start.kind === 'time'
                ? start.time
                : 0);
          if (pattern) expect(out.watermark).toBeLessThanOrEqual(Math.max(0, floor));
          for (const t of topics) {
            const pos = out.positions.get(t);
            if (pos === undefined) {
              // Covered by a watermark no later than where the topic starts.
              expect(out.watermark).toBeDefined();
              expect(out.watermark).toBeLessThanOrEqual(Math.max(0, floor));
              continue;
            }
            const listed = c?.positions.get(t);
            if (listed) {
              expect(pos).toEqual(listed);
              continue;
            }
            const h = before.get(t)!;
            expect(h).toBeTruthy();
            expect(pos.epoch).toBe(h.epoch);
            const expected =
              start.kind === 'now'
                ? h.lastSeq
                : start.kind === 'earliest'
                  ? h.firstSeq - 1
                  : start.kind === 'after'
                    ? start.seq
                    : NaN;
            expect(pos.seq).toBe(expected);
          }
          // Nothing listed that the subscription does not have.
          for (const t of out.positions.keys()) expect(topics).toContain(t);
        },
      ),
    );
  });
});
