import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { thrown } from '@rill/testkit';
import { decodeCursor } from '../src/model/cursor.js';
import { sseEventFrame } from '../src/wire/sse.js';
import { RillError } from '../src/model/errors.js';
import {
  DEFAULT_MAX_EVENT_BYTES,
  DEFAULT_MAX_JSON_DEPTH,
  MAX_KEY_LENGTH,
  MAX_TYPE_LENGTH,
  eventId,
  eventJson,
  isReservedType,
  parseEventInput,
  rawDataText,
  type EventLimits,
  type RillEvent,
} from '../src/model/event.js';

function expectRillError(fn: () => unknown, code: string): RillError {
  const err = thrown(fn);
  expect(err).toBeInstanceOf(RillError);
  expect((err as RillError).code).toBe(code);
  return err as RillError;
}

const MAX = DEFAULT_MAX_EVENT_BYTES;
const lim = (maxEventBytes: number): EventLimits => ({
  maxEventBytes,
  maxJsonDepth: DEFAULT_MAX_JSON_DEPTH,
});

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

const trickyUnit = fc.constantFrom(
  'a',
  'Z',
  '.',
  ' ',
  '"',
  '\\',
  '/',
  '<',
  '}',
  'é',
  '日',
  '😀',
  '\u00a0',
  '\ufeff',
);
function labelArb(max: number): fc.Arbitrary<string> {
  return fc
    .oneof(
      fc.string({ minLength: 1, maxLength: 40 }),
      fc.string({ unit: trickyUnit, minLength: 1, maxLength: 40 }),
      fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }),
      fc.string({ minLength: max, maxLength: max }),
    )
    .filter((s) => s.length <= max && !CONTROL.test(s) && !/\p{Cs}/u.test(s) && !isReservedType(s));
}
const typeArb = labelArb(MAX_TYPE_LENGTH);
const keyArb = labelArb(MAX_KEY_LENGTH);

const jsonStringUnit = fc.constantFrom(
  'a',
  '\n',
  '\r',
  '\r\n',
  '\0',
  '\t',
  '"',
  '\\',
  '\u2028',
  '\u2029',
  'é',
  '😀',
  '</script>',
  'data: x',
);
/**
 * Data the one event validator accepts: no `__proto__` member, no `constructor` holding
 * `prototype`, no lone surrogate in a string or member name (what it refuses has its own tests).
 */
const wellFormed = (s: string): boolean => !/\p{Cs}/u.test(s);
function accepted(v: unknown): boolean {
  if (typeof v === 'string') return wellFormed(v);
  if (Array.isArray(v)) return v.every(accepted);
  if (v === null || typeof v !== 'object') return true;
  return Object.entries(v).every(
    ([k, x]) =>
      k !== '__proto__' &&
      wellFormed(k) &&
      !(k === 'constructor' && x !== null && typeof x === 'object' && 'prototype' in x) &&
      accepted(x),
  );
}

const jsonArb = fc
  .oneof(
    fc.jsonValue(),
    fc.jsonValue({ stringUnit: 'binary' }),
    fc.jsonValue({ stringUnit: jsonStringUnit }),
  )
  .filter(accepted);

const topicArb = fc
  .array(fc.stringMatching(/^[A-Za-z0-9_~-]{1,12}$/), { minLength: 1, maxLength: 5 })
  .map((s) => s.join('.'));
const epochArb = fc.stringMatching(/^[A-Za-z0-9]{1,32}$/);

// ---------------------------------------------------------------------------------------------
// isReservedType
// ---------------------------------------------------------------------------------------------

describe('isReservedType', () => {
  it.each([['error'], ['reset'], ['rill.'], ['rill.x'], ['rill.reset.now']])(
    '%j is reserved',
    (t) => {
      expect(isReservedType(t)).toBe(true);
    },
  );

  it.each([
    ['message'],
    ['order.created'],
    ['rill'],
    ['rillx'],
    ['rill-x'],
    ['x.rill.y'],
    ['errors'],
    ['reset2'],
    ['my.error'],
  ])('%j is not reserved', (t) => {
    expect(isReservedType(t)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// parseEventInput
// ---------------------------------------------------------------------------------------------

describe('parseEventInput: valid input', () => {
  it.each<[string, unknown]>([
    ['null', null],
    ['false', false],
    ['true', true],
    ['0', 0],
    ['negative float', -1.5],
    ['empty string', ''],
    ['string with newlines', 'line 1\nline 2\r\nline 3'],
    ['string with NUL and U+2028', 'a\0b\u2028c'],
    ['empty array', []],
    ['empty object', {}],
    ['nested', { a: [1, { b: null }], c: 'd' }],
  ])('accepts data %s', (_label, data) => {
    const out = parseEventInput({ data }, lim(MAX));
    // JSON text of the value, with U+2028/U+2029 escaped so no line splitter breaks it.
    expect(out.data).toBe(
      JSON.stringify(data)
        .replace(/\u2028/g, '\\u2028')
        .replace(/\u2029/g, '\\u2029'),
    );
    expect(out.data).not.toMatch(/[\n\r\u2028\u2029]/);
    expect(JSON.parse(out.data)).toEqual(data);
    expect(out).not.toHaveProperty('type');
    expect(out).not.toHaveProperty('key');
  });

  it('keeps data JSON text free of raw newlines', () => {
    const out = parseEventInput({ data: 'a\nb\rc' }, lim(MAX));
    expect(out.data).toBe('"a\\nb\\rc"');
  });

  it('keeps type and key', () => {
    expect(parseEventInput({ type: 'order.created', key: 'k-1', data: 1 }, lim(MAX))).toEqual({
      type: 'order.created',
      key: 'k-1',
      data: '1',
    });
  });

  it('treats an undefined type or key as absent', () => {
    const out = parseEventInput({ type: undefined, key: undefined, data: 1 }, lim(MAX));
    expect(out).toEqual({ data: '1' });
  });

  it.each<[string, { type?: string; key?: string; data: unknown }]>([
    ['type of max length', { type: 't'.repeat(MAX_TYPE_LENGTH), data: 1 }],
    ['key of max length', { key: 'k'.repeat(MAX_KEY_LENGTH), data: 1 }],
    ['non-ASCII type', { type: 'commande.créée', data: 1 }],
    ['emoji key', { key: '😀', data: 1 }],
    ['type with spaces and quotes', { type: 'a "b" c', data: 1 }],
    ['type "rill"', { type: 'rill', data: 1 }],
    ['type "errors"', { type: 'errors', data: 1 }],
  ])('accepts %s', (_label, raw) => {
    const out = parseEventInput(raw, lim(MAX));
    expect(out.type).toBe(raw.type);
    expect(out.key).toBe(raw.key);
  });

  it('has the documented limits', () => {
    expect(MAX_TYPE_LENGTH).toBe(200);
    expect(MAX_KEY_LENGTH).toBe(256);
    expect(DEFAULT_MAX_EVENT_BYTES).toBe(64 * 1024);
  });
});

describe('parseEventInput: invalid input', () => {
  const bad: [label: string, raw: unknown, code: 'invalid_event' | 'event_too_large'][] = [
    ['null', null, 'invalid_event'],
    ['undefined', undefined, 'invalid_event'],
    ['number', 1, 'invalid_event'],
    ['string', '{"data":1}', 'invalid_event'],
    ['boolean', true, 'invalid_event'],
    ['empty array', [], 'invalid_event'],
    ['array of events', [{ data: 1 }], 'invalid_event'],
    ['missing data', {}, 'invalid_event'],
    ['missing data, with type', { type: 'x' }, 'invalid_event'],
    ['undefined data', { data: undefined }, 'invalid_event'],
    ['unknown field', { data: 1, extra: 1 }, 'invalid_event'],
    ['unknown field "id"', { data: 1, id: 'a:e:1' }, 'invalid_event'],
    ['unknown field "seq"', { data: 1, seq: 5 }, 'invalid_event'],
    ['unknown field "topic"', { data: 1, topic: 'a' }, 'invalid_event'],
    ['unknown field "__proto__"', JSON.parse('{"__proto__":{"x":1},"data":1}'), 'invalid_event'],
    ['empty type', { type: '', data: 1 }, 'invalid_event'],
    ['type too long', { type: 't'.repeat(MAX_TYPE_LENGTH + 1), data: 1 }, 'invalid_event'],
    ['number type', { type: 5, data: 1 }, 'invalid_event'],
    ['null type', { type: null, data: 1 }, 'invalid_event'],
    ['object type', { type: {}, data: 1 }, 'invalid_event'],
    ['array type', { type: ['a'], data: 1 }, 'invalid_event'],
    ['boolean type', { type: true, data: 1 }, 'invalid_event'],
    ['empty key', { key: '', data: 1 }, 'invalid_event'],
    ['key too long', { key: 'k'.repeat(MAX_KEY_LENGTH + 1), data: 1 }, 'invalid_event'],
    ['number key', { key: 5, data: 1 }, 'invalid_event'],
    ['null key', { key: null, data: 1 }, 'invalid_event'],
    ['object key', { key: {}, data: 1 }, 'invalid_event'],
    ['type with CR', { type: 'a\rb', data: 1 }, 'invalid_event'],
    ['type with LF', { type: 'a\nb', data: 1 }, 'invalid_event'],
    ['type with trailing LF', { type: 'a\n', data: 1 }, 'invalid_event'],
    ['type with NUL', { type: 'a\0b', data: 1 }, 'invalid_event'],
    ['type with U+2028', { type: 'a\u2028b', data: 1 }, 'invalid_event'],
    ['type with U+2029', { type: 'a\u2029b', data: 1 }, 'invalid_event'],
    ['type with tab', { type: 'a\tb', data: 1 }, 'invalid_event'],
    ['type with DEL', { type: 'a\u007fb', data: 1 }, 'invalid_event'],
    ['SSE injection in type', { type: 'x\ndata: evil\n\n', data: 1 }, 'invalid_event'],
    ['key with CR', { key: 'a\rb', data: 1 }, 'invalid_event'],
    ['key with LF', { key: 'a\nb', data: 1 }, 'invalid_event'],
    ['key with NUL', { key: 'a\0b', data: 1 }, 'invalid_event'],
    ['key with U+2028', { key: 'a\u2028b', data: 1 }, 'invalid_event'],
    ['reserved type "error"', { type: 'error', data: 1 }, 'invalid_event'],
    ['reserved type "reset"', { type: 'reset', data: 1 }, 'invalid_event'],
    ['reserved type "rill.x"', { type: 'rill.x', data: 1 }, 'invalid_event'],
    ['reserved type "rill."', { type: 'rill.', data: 1 }, 'invalid_event'],
    ['data too large', { data: 'x'.repeat(MAX) }, 'event_too_large'],
    ['multi-byte data too large', { data: 'é'.repeat(MAX / 2) }, 'event_too_large'],
    [
      'type and key push it over the limit',
      {
        type: 't'.repeat(MAX_TYPE_LENGTH),
        key: 'k'.repeat(MAX_KEY_LENGTH),
        data: 'x'.repeat(MAX - 10),
      },
      'event_too_large',
    ],
  ];

  it.each(bad)('rejects %s', (_label, raw, code) => {
    const err = expectRillError(() => parseEventInput(raw, lim(MAX)), code);
    if (code === 'event_too_large') {
      expect(err.status).toBe(413);
      expect(err.details).toEqual({ limit: MAX });
    } else {
      expect(err.status).toBe(400);
    }
  });

  it('names the event index in the message when given one', () => {
    const err = expectRillError(() => parseEventInput({}, lim(MAX), 3), 'invalid_event');
    expect(err.message).toContain('event 3');
    const err2 = expectRillError(() => parseEventInput({}, lim(MAX)), 'invalid_event');
    expect(err2.message).not.toMatch(/event \d/);
  });

  it('measures data in UTF-8 bytes of its JSON text, up to and including the limit', () => {
    // '"abc"' is 5 bytes.
    expect(parseEventInput({ data: 'abc' }, lim(5)).data).toBe('"abc"');
    expectRillError(() => parseEventInput({ data: 'abc' }, lim(4)), 'event_too_large');
    // '"é"' is 4 bytes in UTF-8 (3 UTF-16 units).
    expect(parseEventInput({ data: 'é' }, lim(4)).data).toBe('"é"');
    expectRillError(() => parseEventInput({ data: 'é' }, lim(3)), 'event_too_large');
    // '"\n"' is 4 bytes once escaped.
    expect(parseEventInput({ data: '\n' }, lim(4)).data).toBe('"\\n"');
    expectRillError(() => parseEventInput({ data: '\n' }, lim(3)), 'event_too_large');
  });

  it('counts type and key toward the size limit', () => {
    expect(parseEventInput({ data: 1 }, lim(10)).data).toBe('1');
    expectRillError(
      () => parseEventInput({ type: 't'.repeat(20), data: 1 }, lim(10)),
      'event_too_large',
    );
    expectRillError(
      () => parseEventInput({ key: 'k'.repeat(20), data: 1 }, lim(10)),
      'event_too_large',
    );
  });

  it('property: any value either parses or throws invalid_event / event_too_large', () => {
    const rawArb = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          type: fc.oneof(fc.string(), fc.jsonValue()),
          key: fc.oneof(fc.string(), fc.jsonValue()),
          data: fc.jsonValue(),
          other: fc.jsonValue(),
        },
        { requiredKeys: [] },
      ),
    );
    fc.assert(
      fc.property(rawArb, fc.integer({ min: 1, max: 200 }), (raw, max) => {
        try {
          const out = parseEventInput(raw, lim(max));
          expect(typeof out.data).toBe('string');
          expect(JSON.parse(out.data)).toEqual(
            JSON.parse(JSON.stringify((raw as { data: unknown }).data)),
          );
        } catch (err) {
          expect(err).toBeInstanceOf(RillError);
          expect(['invalid_event', 'event_too_large']).toContain((err as RillError).code);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// eventId / eventJson
// ---------------------------------------------------------------------------------------------

function makeEvent(fields: Omit<RillEvent, 'json'>): RillEvent {
  return { ...fields };
}

describe('rawDataText', () => {
  it('returns the exact text of data for compact objects', () => {
    expect(rawDataText('{"data":{"a":[1,"x\\"}",null]}}')).toBe('{"a":[1,"x\\"}",null]}');
    expect(rawDataText('{"type":"t","data":"a,b}","key":"k"}')).toBe('"a,b}"');
    expect(rawDataText('{"key":"k\\\\","data":-1.5e3}')).toBe('-1.5e3');
    expect(rawDataText('{"data":true}')).toBe('true');
    expect(rawDataText('{"data":"\\\\"}')).toBe('"\\\\"');
  });

  it('declines whitespace outside strings, escaped names, duplicate or missing data', () => {
    expect(rawDataText('{"data": 1}')).toBeUndefined();
    expect(rawDataText('{"data":{"a": 1}}')).toBeUndefined();
    expect(rawDataText('{"data":1,"data":2}')).toBeUndefined();
    expect(rawDataText('{"d\\u0061ta":1}')).toBeUndefined();
    expect(rawDataText('{"type":"t"}')).toBeUndefined();
    expect(rawDataText('{}')).toBeUndefined();
  });

  it('agrees with JSON.parse on any compact event line (property)', () => {
    fc.assert(
      fc.property(
        fc.jsonValue(),
        fc.option(fc.string(), { nil: undefined }),
        fc.boolean(),
        (data, type, typeFirst) => {
          const obj = typeFirst ? { type, data } : { data, type };
          const line = JSON.stringify(obj);
          const text = rawDataText(line);
          expect(text).toBeDefined();
          expect(JSON.parse(text as string)).toEqual(JSON.parse(line).data);
          // Whitespace anywhere outside strings makes it decline rather than keep the spacing.
          const spaced = JSON.stringify(obj, null, 1);
          if (spaced.includes('\n')) expect(rawDataText(spaced)).toBeUndefined();
        },
      ),
    );
  });
});

describe('eventId', () => {
  it('is topic:epoch:seq', () => {
    const ev = makeEvent({ topic: 'orders', seq: 42, epoch: 'E1', time: 1, data: '1' });
    expect(eventId(ev)).toBe('orders:E1:42');
  });

  it('property: decodes back to the event position', () => {
    fc.assert(
      fc.property(topicArb, epochArb, fc.maxSafeNat(), (topic, epoch, seq) => {
        const ev = makeEvent({ topic, seq, epoch, time: 0, data: 'null' });
        expect([...decodeCursor(eventId(ev)).positions]).toEqual([[topic, { epoch, seq }]]);
      }),
    );
  });
});

describe('eventJson', () => {
  it('writes the documented wire shape in order', () => {
    const ev = makeEvent({
      topic: 'orders',
      seq: 42,
      epoch: 'E1',
      time: 1695034345123,
      type: 'order.created',
      key: 'k1',
      data: '{"id":7}',
    });
    expect(eventJson(ev)).toBe(
      '{"topic":"orders","seq":42,"id":"orders:E1:42","type":"order.created","time":1695034345123,"key":"k1","data":{"id":7}}',
    );
  });

  it('omits type and key when absent', () => {
    const ev = makeEvent({ topic: 'a', seq: 1, epoch: 'e', time: 5, data: 'null' });
    expect(eventJson(ev)).toBe('{"topic":"a","seq":1,"id":"a:e:1","time":5,"data":null}');
  });

  it('escapes type and key', () => {
    const ev = makeEvent({
      topic: 'a',
      seq: 1,
      epoch: 'e',
      time: 5,
      type: 'say "hi" \\o/',
      key: '"}',
      data: '0',
    });
    const parsed = JSON.parse(eventJson(ev)) as Record<string, unknown>;
    expect(parsed.type).toBe('say "hi" \\o/');
    expect(parsed.key).toBe('"}');
    expect(parsed.data).toBe(0);
  });

  it('leaves the event as it was: nothing is cached on it', () => {
    const ev = makeEvent({
      topic: 'a',
      seq: 1,
      epoch: 'e',
      time: 5,
      type: 't',
      key: 'k',
      data: '1',
    });
    const before = { ...ev };
    const first = eventJson(ev);
    expect(eventJson(ev)).toBe(first);
    expect(ev).toStrictEqual(before);
  });

  it('property: parses back to {topic, seq, id, type?, time, key?, data}', () => {
    fc.assert(
      fc.property(
        topicArb,
        epochArb,
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.integer({ min: 0, max: 4_102_444_800_000 }),
        fc.option(typeArb, { nil: undefined }),
        fc.option(keyArb, { nil: undefined }),
        jsonArb,
        (topic, epoch, seq, time, type, key, value) => {
          const raw: Record<string, unknown> = { data: value };
          if (type !== undefined) raw.type = type;
          if (key !== undefined) raw.key = key;
          const input = parseEventInput(raw, lim(Number.MAX_SAFE_INTEGER));
          expect(input.type).toBe(type);
          expect(input.key).toBe(key);

          const ev: RillEvent = { topic, seq, epoch, time, data: input.data };
          if (input.type !== undefined) (ev as { type?: string }).type = input.type;
          if (input.key !== undefined) (ev as { key?: string }).key = input.key;

          const json = eventJson(ev);
          expect(json).not.toMatch(/[\r\n]/);

          const expected: Record<string, unknown> = { topic, seq, id: `${topic}:${epoch}:${seq}` };
          if (type !== undefined) expected.type = type;
          expected.time = time;
          if (key !== undefined) expected.key = key;
          expected.data = JSON.parse(JSON.stringify(value));

          const parsed = JSON.parse(json) as Record<string, unknown>;
          expect(parsed).toEqual(expected);
          expect(Object.keys(parsed)).toEqual(Object.keys(expected));

          // The same string again, and nothing stored on the event.
          expect(eventJson(ev)).toBe(json);
          const fields = ['topic', 'seq', 'epoch', 'time', 'data'];
          if (type !== undefined) fields.push('type');
          if (key !== undefined) fields.push('key');
          expect(Object.keys(ev).sort()).toEqual(fields.sort());
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('SSE event frames', () => {
  const ev = (data: string, type?: string): RillEvent => ({
    topic: 'orders',
    seq: 7,
    epoch: 'k3J9x2abQ1mZ',
    time: 1795333328079,
    data,
    ...(type === undefined ? {} : { type }),
  });
  /** The event JSON a client reassembles from the frame's `data:` lines (WHATWG rules). */
  const reassembled = (frame: string): string =>
    frame
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => l.slice(6))
      .join('\n');

  it('carries one-line data on one data line, typed or not', () => {
    for (const e of [ev('{"a":1}'), ev('[1,2]', 'order.created')]) {
      const frame = sseEventFrame(e, null);
      expect(frame.split('\n').filter((l) => l.startsWith('data: '))).toHaveLength(1);
      expect(JSON.parse(reassembled(frame))).toEqual(JSON.parse(eventJson(e)));
      expect(frame.endsWith('\n\n')).toBe(true);
    }
  });

  it('splits data with raw line breaks (possible through the engine API) over data lines', () => {
    for (const data of ['{\n  "a": 1\n}', '{"a":\r\n1}', '[1,\r2]']) {
      const e = ev(data);
      const frame = sseEventFrame(e, 'orders:x:7');
      // No line of the frame may be anything but a field: a raw line break would end the event.
      const lines = frame.split(/\r\n|\r|\n/);
      expect(lines.slice(0, -2).every((l) => /^(id|event|data): /.test(l))).toBe(true);
      expect(JSON.parse(reassembled(frame.replace(/\r\n|\r/g, '\n')))).toEqual(
        JSON.parse(eventJson(e)),
      );
    }
  });
});
