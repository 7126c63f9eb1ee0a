import { describe, expect, it } from 'vitest';
import { RillError } from '../src/model/errors.js';
import type { WsRequest, WsRequestError, WsRequestLimits } from '../src/wire/ws-request.js';
import { MAX_ID_LENGTH, MAX_TOKEN_LENGTH, parseWsRequest } from '../src/wire/ws-request.js';

const LIMITS: WsRequestLimits = {
  maxEventBytes: 64,
  maxJsonDepth: 3,
  maxPatternsPerSubscription: 3,
  maxCursorLength: 100,
};

function parse(msg: unknown, limits = LIMITS): WsRequest | WsRequestError {
  return parseWsRequest(typeof msg === 'string' ? msg : JSON.stringify(msg), limits);
}

function accepted(msg: unknown): WsRequest {
  const r = parse(msg);
  if ('error' in r) throw new Error(`refused with ${r.error.code}: ${r.error.message}`);
  return r;
}

function refused(msg: unknown, limits = LIMITS): WsRequestError {
  const r = parse(msg, limits);
  if (!('error' in r)) throw new Error(`accepted as ${JSON.stringify(r)}`);
  expect(r.error).toBeInstanceOf(RillError);
  return r;
}

describe('parseWsRequest: each op', () => {
  it('reads a ping', () => {
    expect(accepted({ op: 'ping', id: 7 })).toEqual({ op: 'ping', id: 7 });
    expect(accepted({ op: 'ping', id: 'p-1' })).toEqual({ op: 'ping', id: 'p-1' });
  });

  it("reads an auth with its token as sent (checking it is the session's job)", () => {
    expect(accepted({ op: 'auth', id: 1, token: 'eyJ.a.b' })).toEqual({
      op: 'auth',
      id: 1,
      token: 'eyJ.a.b',
    });
    const key = `rill_${'A'.repeat(43)}`;
    expect(accepted({ op: 'auth', id: 'a', token: key })).toEqual({
      op: 'auth',
      id: 'a',
      token: key,
    });
    const long = 'x'.repeat(MAX_TOKEN_LENGTH);
    expect(accepted({ op: 'auth', id: 2, token: long })).toMatchObject({ token: long });
  });

  it('reads an unsubscribe', () => {
    expect(accepted({ op: 'unsubscribe', id: 1, sub: 's3' })).toEqual({
      op: 'unsubscribe',
      id: 1,
      sub: 's3',
    });
  });

  it('reads a subscribe: patterns split, trimmed and de-duplicated, start "now" by default', () => {
    const r = accepted({
      op: 'subscribe',
      id: 'a',
      topics: ['orders', ' prices.> ,orders', 'x.*'],
    });
    expect(r).toEqual({
      op: 'subscribe',
      id: 'a',
      patterns: ['orders', 'prices.>', 'x.*'],
      start: { kind: 'now' },
      cursor: undefined,
      presence: false,
    });
  });

  it.each([
    [{ from: 'now' }, { kind: 'now' }],
    [{ from: null }, { kind: 'now' }],
    [{ from: '' }, { kind: 'now' }],
    [{ from: 'earliest' }, { kind: 'earliest' }],
    [{ from: 5 }, { kind: 'after', seq: 4 }],
    [{ from: '5' }, { kind: 'after', seq: 4 }],
    [{ since: 5 }, { kind: 'after', seq: 5 }],
    [{ since: 0 }, { kind: 'after', seq: 0 }],
    [{ since: 1_700_000_000_000 }, { kind: 'time', time: 1_700_000_000_000 }],
    [{ since: '2026-01-02T03:04:05Z' }, { kind: 'time', time: Date.UTC(2026, 0, 2, 3, 4, 5) }],
    // since wins over from
    [
      { from: 'earliest', since: 9 },
      { kind: 'after', seq: 9 },
    ],
    [
      { from: 3, since: null },
      { kind: 'after', seq: 2 },
    ],
  ])('reads the start of a subscribe with %j', (fields, start) => {
    const r = accepted({ op: 'subscribe', id: 1, topics: ['t'], ...fields });
    expect(r.op === 'subscribe' && r.start).toEqual(start);
  });

  it('reads the cursor of a subscribe (trimmed; blank means none)', () => {
    const r = accepted({ op: 'subscribe', id: 1, topics: ['a.>'], cursor: ' a.b:E1:3,@1000 ' });
    expect(r.op === 'subscribe' && r.cursor).toEqual({
      positions: new Map([['a.b', { epoch: 'E1', seq: 3 }]]),
      watermark: 1000,
    });
    const blank = accepted({ op: 'subscribe', id: 1, topics: ['a'], cursor: '  ' });
    expect(blank.op === 'subscribe' && blank.cursor).toBeUndefined();
  });

  it('reads a publish through the event validator', () => {
    expect(
      accepted({
        op: 'publish',
        id: 2,
        topic: 'orders',
        type: 'created',
        key: 'k1',
        data: { n: 1 },
      }),
    ).toEqual({
      op: 'publish',
      id: 2,
      topic: 'orders',
      event: { type: 'created', key: 'k1', data: '{"n":1}' },
    });
    // `data: null` is an event whose data is null, not a missing field.
    expect(accepted({ op: 'publish', id: 3, topic: 't', data: null })).toEqual({
      op: 'publish',
      id: 3,
      topic: 't',
      event: { data: 'null' },
    });
    // An ephemeral publish (docs/protocol.md § Ephemeral events) is a field of its own.
    expect(
      accepted({ op: 'publish', id: 4, topic: 't', ephemeral: true, type: 'typing', data: 1 }),
    ).toEqual({
      op: 'publish',
      id: 4,
      topic: 't',
      event: { type: 'typing', data: '1', ephemeral: true },
    });
  });

  it('takes any id it can echo: 1-256 characters, or a finite number', () => {
    for (const id of ['x', 'x'.repeat(MAX_ID_LENGTH), 0, -1.5, 1e300]) {
      expect(accepted({ op: 'ping', id })).toEqual({ op: 'ping', id });
    }
  });
});

describe('parseWsRequest: refusals', () => {
  it.each([
    ['not JSON', '{"op":'],
    ['empty', ''],
    ['null', 'null'],
    ['an array', '[{"op":"ping","id":1}]'],
    ['a number', '42'],
    ['a string', '"ping"'],
  ])('refuses a message that is %s with invalid_message and no id', (_what, text) => {
    const r = refused(text);
    expect(r.error.code).toBe('invalid_message');
    expect(r.id).toBeUndefined();
  });

  it.each([
    ['no op', { id: 1 }],
    ['a numeric op', { op: 1, id: 1 }],
    ['a null op', { op: null, id: 1 }],
  ])('refuses %s with invalid_message', (_what, msg) => {
    const r = refused(msg);
    expect(r.error.code).toBe('invalid_message');
    expect(r.error.message).toMatch(/"op" string/);
    expect(r.id).toBe(1);
  });

  it.each(['subscribed', 'PING', '', 'constructor', 'toString', '__proto__', 'hasOwnProperty'])(
    'refuses op %j with unknown_op',
    (op) => {
      const r = refused({ op, id: 1 });
      expect(r.error.code).toBe('unknown_op');
      expect(r.error.message).toContain(
        'use auth, subscribe, unsubscribe, publish, presence or ping',
      );
      expect(r.id).toBe(1);
    },
  );

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['too long', 'x'.repeat(MAX_ID_LENGTH + 1)],
    ['null', null],
    ['a boolean', true],
    ['an object', { n: 1 }],
    ['an array', [1]],
  ])('refuses an id that is %s with invalid_message, without echoing it', (_what, id) => {
    const r = refused({ op: 'ping', id });
    expect(r.error.code).toBe('invalid_message');
    expect(r.error.message).toMatch(/"id" is required/);
    expect(r.id).toBeUndefined();
  });

  it.each([
    ['subscribe', { op: 'subscribe', id: 1, topics: ['a'], form: 'now' }, 'form'],
    ['unsubscribe', { op: 'unsubscribe', id: 1, sub: 's1', topics: ['a'] }, 'topics'],
    ['publish', { op: 'publish', id: 1, topic: 'a', data: 1, ttl: 5 }, 'ttl'],
    ['ping', { op: 'ping', id: 1, data: 1 }, 'data'],
    ['auth', { op: 'auth', id: 1, token: 't', sub: 'alice' }, 'sub'],
    ['ping', JSON.parse('{"op":"ping","id":1,"__proto__":{}}') as unknown, '__proto__'],
  ])('refuses an unknown field in %s with invalid_message', (op, msg, field) => {
    const r = refused(msg);
    expect(r.error.code).toBe('invalid_message');
    expect(r.error.message).toContain(`Unknown field "${field}" in ${op}`);
    expect(r.id).toBe(1);
  });

  const sub = (fields: Record<string, unknown>): unknown => ({
    op: 'subscribe',
    id: 'q',
    topics: ['a'],
    ...fields,
  });

  it.each([
    ['topics missing', { topics: undefined }, 'invalid_message', /"topics" must be an array/],
    ['topics a string', { topics: 'a,b' }, 'invalid_message', /"topics" must be an array/],
    ['topics with a number', { topics: ['a', 1] }, 'invalid_message', /"topics" must be/],
    ['topics with null', { topics: [null] }, 'invalid_message', /"topics" must be/],
    ['topics empty', { topics: [] }, 'invalid_parameter', /topics is required/],
    ['topics blank', { topics: [' ', ','] }, 'invalid_parameter', /topics is required/],
    ['too many topics', { topics: ['a', 'b', 'c', 'd'] }, 'too_many_topics', /At most 3/],
    ['a bad topic', { topics: ['a..b'] }, 'invalid_pattern', /Invalid topic pattern/],
    ['a bad pattern', { topics: ['a.>.b'] }, 'invalid_pattern', /Invalid topic pattern/],
    ['from negative', { from: -1 }, 'invalid_parameter', /"from" must be a string or/],
    ['from fractional', { from: 1.5 }, 'invalid_parameter', /"from" must be a string or/],
    ['from unsafe', { from: 2 ** 53 }, 'invalid_parameter', /"from" must be a string or/],
    ['from a boolean', { from: true }, 'invalid_parameter', /"from" must be a string or/],
    ['from an object', { from: {} }, 'invalid_parameter', /"from" must be a string or/],
    ['from 0', { from: 0 }, 'invalid_parameter', /from must be now, earliest, or a seq/],
    ['from a word', { from: 'latest' }, 'invalid_parameter', /from must be now, earliest/],
    ['since an array', { since: [1] }, 'invalid_parameter', /"since" must be a string or/],
    ['since a word', { since: 'yesterday' }, 'invalid_parameter', /since must be a seq/],
    ['since a bad date', { since: '2026-13-45' }, 'invalid_parameter', /since must be a seq/],
    ['cursor a number', { cursor: 5 }, 'invalid_message', /"cursor" must be a string/],
    ['cursor null', { cursor: null }, 'invalid_message', /"cursor" must be a string/],
    ['cursor malformed', { cursor: 'a:b' }, 'invalid_cursor', /topic:epoch:seq/],
    ['cursor too long', { cursor: `a:E1:${'1'.repeat(100)}` }, 'invalid_cursor', /longer/],
  ])('refuses a subscribe with %s', (_what, fields, code, message) => {
    const r = refused(sub(fields));
    expect(r.error.code).toBe(code);
    expect(r.error.message).toMatch(message);
    expect(r.id).toBe('q');
  });

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['a number', 42],
    ['null', null],
    ['an object', { jwt: 'x' }],
    ['too long', 'x'.repeat(MAX_TOKEN_LENGTH + 1)],
  ])('refuses an auth whose token is %s with invalid_message, echoing the id', (_what, token) => {
    const r = refused({ op: 'auth', id: 9, token });
    expect(r.error.code).toBe('invalid_message');
    expect(r.error.message).toMatch(/"token" must be a JWT or API key/);
    expect(r.id).toBe(9);
  });

  it('gives too_many_topics its limit as a detail', () => {
    expect(refused(sub({ topics: ['a', 'b', 'c', 'd'] })).error.toJSON().error.limit).toBe(3);
  });

  it.each([
    ['sub missing', { op: 'unsubscribe', id: 4 }],
    ['sub a number', { op: 'unsubscribe', id: 4, sub: 1 }],
  ])('refuses an unsubscribe with %s with invalid_message', (_what, msg) => {
    const r = refused(msg);
    expect(r.error.code).toBe('invalid_message');
    expect(r.error.message).toMatch(/"sub" must be/);
    expect(r.id).toBe(4);
  });

  const pub = (fields: Record<string, unknown>): unknown => ({
    op: 'publish',
    id: 5,
    topic: 't',
    data: 1,
    ...fields,
  });

  it.each([
    ['topic missing', { topic: undefined }, 'invalid_message', /"topic" must be a topic name/],
    ['topic a number', { topic: 3 }, 'invalid_message', /"topic" must be a topic name/],
    ['topic a pattern', { topic: 'a.*' }, 'invalid_topic', /Invalid topic name/],
    ['topic too long', { topic: 'a'.repeat(201) }, 'invalid_topic', /Invalid topic name/],
    ['data missing', { data: undefined }, 'invalid_event', /no "data" field/],
    ['type empty', { type: '' }, 'invalid_event', /type must be a string/],
    ['type null', { type: null }, 'invalid_event', /type must be a string/],
    ['type reserved', { type: 'error' }, 'invalid_event', /reserved/],
    ['key a number', { key: 1 }, 'invalid_event', /key must be a string/],
    ['data too deep', { data: [[[[1]]]] }, 'json_too_deep', /nested more than 3/],
    ['data too large', { data: 'x'.repeat(100) }, 'event_too_large', /larger than 64 bytes/],
  ])('refuses a publish with %s', (_what, fields, code, message) => {
    const r = refused(pub(fields));
    expect(r.error.code).toBe(code);
    expect(r.error.message).toMatch(message);
    expect(r.id).toBe(5);
  });

  it('answers anything unexpected thrown while checking as internal, with the cause', () => {
    const bug = new TypeError('a bug');
    const limits = {
      ...LIMITS,
      get maxPatternsPerSubscription(): number {
        throw bug;
      },
    };
    const r = refused(sub({}), limits);
    expect(r.error.code).toBe('internal');
    expect(r.error.cause).toBe(bug);
    expect(r.id).toBe('q');
  });
});

describe('parseWsRequest: which error a message with several faults gets', () => {
  // The first check that fails answers: shape (op, id, fields), then the op's fields in order.
  it.each([
    ['unknown op before a missing id', { op: 'nope' }, 'unknown_op'],
    ['missing op before a missing id', {}, 'invalid_message'],
    ['missing id before an unknown field', { op: 'ping', extra: 1 }, 'invalid_message'],
    [
      'unknown field before bad topics',
      { op: 'subscribe', id: 1, topics: 5, extra: 1 },
      'invalid_message',
    ],
    [
      'a bad pattern before a bad from',
      { op: 'subscribe', id: 1, topics: ['a..b'], from: -1 },
      'invalid_pattern',
    ],
    [
      'too many topics before a bad cursor',
      { op: 'subscribe', id: 1, topics: ['a', 'b', 'c', 'd'], cursor: 5 },
      'too_many_topics',
    ],
    [
      'a bad since before a cursor that is not a string',
      { op: 'subscribe', id: 1, topics: ['a'], since: 'soon', cursor: 5 },
      'invalid_parameter',
    ],
    [
      'a bad from type before a bad since value',
      { op: 'subscribe', id: 1, topics: ['a'], from: true, since: 'soon' },
      'invalid_parameter',
    ],
    [
      'a bad topic before a bad event',
      { op: 'publish', id: 1, topic: 'a.*', type: '' },
      'invalid_topic',
    ],
  ])('%s', (_what, msg, code) => {
    expect(refused(msg).error.code).toBe(code);
  });

  it('reports a bad from type rather than a bad since value', () => {
    const r = refused({ op: 'subscribe', id: 1, topics: ['a'], from: true, since: 'soon' });
    expect(r.error.message).toMatch(/"from" must be a string/);
  });
});
