import { describe, expect, it } from 'vitest';
import { RillError } from '../src/model/errors.js';
import { eventJson, parseEventInput } from '../src/model/event.js';
import {
  decodeTrace,
  encodeTrace,
  parseTraceContext,
  parseTraceparent,
  parseTracestate,
} from '../src/model/trace.js';

const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const limits = { maxEventBytes: 1024, maxJsonDepth: 8 };

describe('traceparent', () => {
  it('takes a valid version-00 value, trimmed', () => {
    expect(parseTraceparent(TP)).toBe(TP);
    expect(parseTraceparent(` ${TP}\t`)).toBe(TP);
  });

  it.each([
    ['another version', TP.replace(/^00/, '01')],
    ['version ff', TP.replace(/^00/, 'ff')],
    ['upper-case hex', TP.toUpperCase()],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`],
    ['an all-zero parent id', `00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`],
    ['a short trace id', '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01'],
    ['a trailing part', `${TP}-00`],
    ['one-digit flags', TP.slice(0, -1)],
    ['not a string', 42],
    ['a huge string', 'x'.repeat(100_000)],
  ])('ignores %s', (_what, value) => {
    expect(parseTraceparent(value)).toBeUndefined();
  });
});

describe('tracestate', () => {
  it('keeps valid members, dropping empty ones and the spaces around commas', () => {
    expect(parseTracestate('rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,,')).toBe(
      'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE',
    );
    expect(parseTracestate('tenant@vendor=a b')).toBe('tenant@vendor=a b');
  });

  it.each([
    ['an upper-case key', 'Rojo=1'],
    ['an empty value', 'rojo= '],
    ['a value with "="', 'rojo=a=b'],
    ['a control character', 'rojo=a\u0001'],
    ['33 members', Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(',')],
    ['more than 512 characters', `k=${'v'.repeat(255)},l=${'v'.repeat(255)}`],
    ['nothing but commas', ',,'],
  ])('ignores %s', (_what, value) => {
    expect(parseTracestate(value)).toBeUndefined();
  });

  it('is dropped alone: the traceparent stays', () => {
    expect(parseTraceContext(TP, 'Bad=1')).toEqual({ traceparent: TP });
    expect(parseTraceContext('nope', 'rojo=1')).toBeUndefined();
  });
});

describe('stored form', () => {
  it('round-trips with and without tracestate', () => {
    for (const t of [{ traceparent: TP }, { traceparent: TP, tracestate: 'a=1,b=2' }]) {
      expect(decodeTrace(encodeTrace(t))).toEqual(t);
    }
    expect(decodeTrace(undefined)).toBeUndefined();
    expect(decodeTrace(false)).toBeUndefined();
  });
});

describe('an event with a trace', () => {
  it('is validated by parseEventInput: a valid trace is kept, an invalid one ignored', () => {
    expect(parseEventInput({ data: 1, trace: { traceparent: TP } }, limits).trace).toEqual({
      traceparent: TP,
    });
    const ignored = parseEventInput(
      { data: 1, trace: { traceparent: 'x', baggage: 'k=v' } },
      limits,
    );
    expect(ignored).toEqual({ data: '1' });
    expect(() => parseEventInput({ data: 1, trace: 'x' }, limits)).toThrow(RillError);
    expect(() => parseEventInput({ data: 1, trace: [TP] }, limits)).toThrow(/trace/);
  });

  it('carries it in its wire JSON, tracestate escaped', () => {
    const ev = {
      topic: 't',
      seq: 1,
      epoch: 'e1',
      time: 5,
      data: '{"a":1}',
      trace: { traceparent: TP, tracestate: 'v=a"b\\c' },
    };
    expect(JSON.parse(eventJson(ev))).toMatchObject({ trace: ev.trace, data: { a: 1 } });
    expect(eventJson({ ...ev, trace: undefined })).not.toContain('trace');
  });
});
