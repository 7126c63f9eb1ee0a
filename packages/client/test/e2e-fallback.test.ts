/**
 * Streaming blocked: an HTTP proxy in front of a real server that buffers event streams (as some
 * corporate proxies do) so no byte of them ever arrives. In `auto` mode the SDK notices the silent
 * stream, falls back to long-polling `/v1/events`, and still delivers every event once, in order.
 */
import { describe, expect, it } from 'vitest';
import { publish, startServer, useCleanups } from '@rill/testkit';
import { createClient, type StateChange } from '../src/index.js';
import { httpProxy } from '@rill/testkit/proxy';
import { dropStreams, SHARED_NATS_URL, uniqueNatsPrefix } from '@rill/testkit/nats';

/** Holds every event-stream answer until it ends, as a buffering proxy does. */
function bufferingProxy(target: string): ReturnType<typeof httpProxy> {
  return httpProxy(target, (upRes, res) => {
    const held: Buffer[] = [];
    upRes.on('data', (c: Buffer) => held.push(c));
    upRes.on('end', () => res.end(Buffer.concat(held)));
  });
}

describe('auto transport', () => {
  const { cleanups } = useCleanups();

  it('falls back to long-poll when a proxy buffers the event stream', async () => {
    const srv = await startServer();
    cleanups.push(srv.close);
    const proxy = await bufferingProxy(srv.url);
    cleanups.push(proxy.close);
    const client = createClient({
      url: proxy.url,
      firstByteTimeout: 300,
      backoff: { initialDelay: 50 },
    });
    cleanups.push(() => client.close());

    for (let n = 1; n <= 3; n++) await publish(srv.url, 'fb', { data: { n } });
    const states: StateChange[] = [];
    const seqs: number[] = [];
    const sub = client.subscribe<{ n: number }>('fb', {
      from: 'earliest',
      onState: (s) => states.push(s),
    });
    for await (const ev of sub) {
      seqs.push(ev.seq);
      if (ev.seq === 3) for (let n = 4; n <= 5; n++) await publish(srv.url, 'fb', { data: { n } });
      if (ev.seq === 5) break;
    }
    expect(seqs).toEqual([1, 2, 3, 4, 5]);
    expect(proxy.paths.some((p) => p.startsWith('/v1/stream?'))).toBe(true);
    expect(proxy.paths.some((p) => p.startsWith('/v1/events?'))).toBe(true);
    expect(states.find((s) => s.error?.code === 'stream_blocked')).toBeDefined();
    // The proxy holds the stream's head too: SSE never opened, long-poll did.
    expect(states.filter((s) => s.state === 'open').map((s) => s.transport)).toEqual(['poll']);
  });
});

describe('poll transport', () => {
  const { cleanups } = useCleanups();

  // The NATS engine answers its first reads slowest: a first page must still wait for them, and
  // a page of one topic must not carry the others past events never handed over.
  it('delivers a multi-topic backlog whole over the nats engine: 5 orders, then 1,000 numbers', async () => {
    const prefix = uniqueNatsPrefix();
    cleanups.push(() => dropStreams(SHARED_NATS_URL, prefix));
    const srv = await startServer({ engine: 'nats', nats: { url: SHARED_NATS_URL, prefix } });
    cleanups.push(srv.close);
    await publish(
      srv.url,
      'orders',
      [1, 2, 3, 4, 5].map((n) => ({ data: n })),
    );
    await publish(
      srv.url,
      'numbers',
      Array.from({ length: 1000 }, (_, i) => ({ data: i + 1 })),
    );
    // Age the backlog past the server's one-second watermark margin, as any real backlog is:
    // a cursor that wrongly covered `orders` by time would then skip them.
    await new Promise((r) => setTimeout(r, 1100));
    const client = createClient({ url: srv.url, transport: 'poll' });
    cleanups.push(() => client.close());
    const got = new Map<string, number[]>([
      ['orders', []],
      ['numbers', []],
    ]);
    let n = 0;
    for await (const ev of client.subscribe<number>(['numbers', 'orders'], { from: 'earliest' })) {
      got.get(ev.topic)!.push(ev.seq);
      if (++n === 1005) break;
    }
    expect(got.get('orders')).toEqual([1, 2, 3, 4, 5]);
    expect(got.get('numbers')).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
  });
});
