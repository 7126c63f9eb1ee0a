/**
 * Cursor handling, with a scripted transport: the resume cursor is the one of the last delivered
 * event (not of one received and dropped), a given cursor seeds dedupe, repeats are dropped by
 * `(topic, seq)`, reset notices move the position, `from=now` resumes by the first open's time.
 */
import { describe, expect, it, vi } from 'vitest';
import {
  cursorPositions,
  parseId,
  RillClient,
  rillError,
  type RillEvent,
  type RillNotice,
  type StreamHandlers,
  type StreamRequest,
  type Transport,
} from '../src/index.js';

function ev(topic: string, seq: number, epoch = 'E1'): RillEvent<{ seq: number }> {
  return {
    topic,
    seq,
    id: `${topic}:${epoch}:${seq}`,
    time: 1_800_000_000_000 + seq,
    data: { seq },
  };
}

function harness(subOpts: Parameters<RillClient['subscribe']>[1] = {}): {
  reqs: StreamRequest[];
  conns: StreamHandlers[];
  got: string[];
  notices: RillNotice[];
  sub: ReturnType<RillClient['subscribe']>;
} {
  const reqs: StreamRequest[] = [];
  const conns: StreamHandlers[] = [];
  const transport: Transport = (req, h) => {
    reqs.push(req);
    conns.push(h);
    return () => {};
  };
  const client = new RillClient(
    { url: 'http://rill.test', backoff: { initialDelay: 1, maxDelay: 1 } },
    { sse: transport },
  );
  const got: string[] = [];
  const notices: RillNotice[] = [];
  const sub = client.subscribe(['a', 'b.*'], {
    ...subOpts,
    onEvent: (e) => got.push(`${e.topic}:${e.seq}`),
    onNotice: (n) => notices.push(n),
  });
  return { reqs, conns, got, notices, sub };
}

const tick = (ms = 5): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('cursor parsing', () => {
  it('splits ids and multi-topic cursors', () => {
    expect(parseId('prices.BTC-USD:Ab12:42')).toEqual({
      topic: 'prices.BTC-USD',
      epoch: 'Ab12',
      seq: 42,
    });
    expect(parseId('nonsense')).toBeUndefined();
    expect(parseId('a:b:-1')).toBeUndefined();
    expect([...cursorPositions('a:E1:3,b.x:E2:9,@1700000000000')]).toEqual([
      ['a', { epoch: 'E1', seq: 3 }],
      ['b.x', { epoch: 'E2', seq: 9 }],
    ]);
  });
});

describe('subscription cursor and dedupe', () => {
  it('drops repeats by (topic, seq) and resumes from the last delivered cursor', async () => {
    const { reqs, conns, got, sub } = harness({ from: 'earliest' });
    await tick(0);
    expect(reqs[0]).toEqual({ topics: ['a', 'b.*'], from: 'earliest' });
    const h = conns[0]!;
    h.open({});
    h.event(ev('a', 1), 'a:E1:1');
    h.event(ev('b.x', 1), 'a:E1:1,b.x:E1:1,@5');
    h.event(ev('a', 1), 'a:E1:1,b.x:E1:1,@9'); // a repeat, with a cursor of its own
    h.event(ev('a', 2), 'a:E1:2,b.x:E1:1,@6');
    await tick(0);
    expect(got).toEqual(['a:1', 'b.x:1', 'a:2']);
    expect(sub.cursor).toBe('a:E1:2,b.x:E1:1,@6');
    h.close(rillError('connection_failed', 'cut', { retryable: true }));
    await tick();
    expect(reqs[1]).toEqual({
      topics: ['a', 'b.*'],
      from: 'earliest',
      cursor: 'a:E1:2,b.x:E1:1,@6',
    });
    const h2 = conns[1]!;
    h2.open({});
    h2.event(ev('a', 2), 'a:E1:2,b.x:E1:1,@6');
    h2.event(ev('b.x', 1), 'a:E1:2,b.x:E1:1,@6');
    h2.event(ev('b.x', 2), 'a:E1:2,b.x:E1:2,@7');
    await tick(0);
    expect(got).toEqual(['a:1', 'b.x:1', 'a:2', 'b.x:2']);
    sub.close();
  });

  it('a given cursor seeds dedupe; a reset notice moves the position to the new epoch', async () => {
    const { conns, got, notices, sub } = harness({ cursor: 'a:E1:5' });
    await tick(0);
    const h = conns[0]!;
    h.open({});
    h.event(ev('a', 5), 'a:E1:5');
    h.event(ev('a', 6), 'a:E1:6');
    h.reset(
      { kind: 'reset', topic: 'a', reason: 'epoch', epoch: 'E2', seq: 0, cursorEpoch: 'E1' },
      'a:E2:0',
    );
    h.event(ev('a', 1, 'E2'), 'a:E2:1');
    await tick(0);
    expect(got).toEqual(['a:6', 'a:1']);
    expect(notices).toEqual([
      { kind: 'reset', topic: 'a', reason: 'epoch', epoch: 'E2', seq: 0, cursorEpoch: 'E1' },
    ]);
    expect(sub.cursor).toBe('a:E2:1');
    sub.close();
  });

  it('from=now with nothing seen resumes by the time the first stream opened', async () => {
    const { reqs, conns, sub } = harness();
    await tick(0);
    expect(reqs[0]).toEqual({ topics: ['a', 'b.*'] });
    conns[0]!.open({ serverTime: 1_800_000_000_000 });
    conns[0]!.close(rillError('connection_failed', 'cut', { retryable: true }));
    await tick();
    expect(reqs[1]).toEqual({ topics: ['a', 'b.*'], since: '1800000000000' });
    sub.close();
  });

  it('an aborted signal closes the subscription and its connection', async () => {
    const stop = vi.fn();
    const client = new RillClient({ url: 'http://rill.test' }, { sse: () => stop });
    const ac = new AbortController();
    const sub = client.subscribe('a', { signal: ac.signal });
    await tick(0);
    ac.abort();
    expect(sub.state).toBe('closed');
    expect(stop).toHaveBeenCalledTimes(1);
    expect(await sub[Symbol.asyncIterator]().next()).toEqual({ value: undefined, done: true });
  });
});
