/**
 * Gap detection against a real server: an HTTP proxy in front of it forwards everything but drops
 * the SSE frame of one event (and, in the second test, the WebSocket message of one event is never
 * sent because the proxy rewrites nothing there: SSE only). The SDK sees the seq jump, reads the
 * missing event from `GET /v1/topics/{t}/events?after=`, and delivers every event once, in order.
 */
import { describe, expect, it } from 'vitest';
import { startServer, useCleanups } from '@rill/testkit';
import { createClient, type RillNotice } from '../src/index.js';
import { httpProxy } from '@rill/testkit/proxy';

const TOPIC = 'sdk.gap';

/** Forwards requests to `target`; in SSE answers, drops the frames `drop` picks (once each). */
async function droppingProxy(
  target: string,
  drop: (frame: string) => boolean,
): Promise<{ url: string; paths: string[]; dropped: string[]; close: () => Promise<void> }> {
  const dropped: string[] = [];
  const proxy = await httpProxy(target, (upRes, res) => {
    let buf = '';
    upRes.setEncoding('utf8');
    upRes.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n\n')) !== -1) {
        const frame = buf.slice(0, i + 2);
        buf = buf.slice(i + 2);
        if (drop(frame)) dropped.push(frame);
        else res.write(frame);
      }
    });
    upRes.on('end', () => res.end());
  });
  return { ...proxy, dropped };
}

describe('gap detection and filling against a real server', () => {
  const { cleanups } = useCleanups();

  it('a dropped SSE frame is read from history before later events are delivered', async () => {
    const srv = await startServer();
    cleanups.push(srv.close);
    let armed = true;
    const proxy = await droppingProxy(srv.url, (frame) => {
      if (armed && frame.includes('"seq":5,')) {
        armed = false;
        return true;
      }
      return false;
    });
    cleanups.push(proxy.close);
    const client = createClient({ url: proxy.url, transport: 'sse' });
    cleanups.push(() => client.close());

    const seqs: number[] = [];
    const notices: RillNotice[] = [];
    const done = new Promise<void>((resolve) => {
      const sub = client.subscribe<{ n: number }>(TOPIC, {
        from: 'earliest',
        onEvent: (ev) => {
          seqs.push(ev.seq);
          if (seqs.length === 10) {
            sub.close();
            resolve();
          }
        },
        onNotice: (n) => notices.push(n),
      });
    });
    for (let n = 1; n <= 10; n++) {
      const res = await fetch(`${srv.url}/v1/topics/${TOPIC}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ data: { n } }),
      });
      expect(res.status).toBe(201);
    }
    await done;
    expect(proxy.dropped).toHaveLength(1);
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(
      proxy.paths.filter((p) => p.startsWith(`/v1/topics/${TOPIC}/events?after=4`)),
    ).toHaveLength(1);
    expect(notices).toEqual([]);
  });

  it('events gone from history are announced as a gap notice, in order', async () => {
    // Retention keeps few events: by the time the SDK asks for the dropped ones, some are gone.
    const srv = await startServer({ retention: { maxEvents: 3 } });
    cleanups.push(srv.close);
    const proxy = await droppingProxy(srv.url, (frame) => /"seq":[2-7],/.test(frame));
    cleanups.push(proxy.close);
    const client = createClient({ url: proxy.url, transport: 'sse' });
    cleanups.push(() => client.close());

    const items: Array<number | RillNotice> = [];
    let seen: () => void = () => {};
    const sub = client.subscribe<{ n: number }>(TOPIC, { from: 'earliest', notices: true });
    const reading = (async () => {
      for await (const it of sub) {
        items.push('kind' in it ? it : it.seq);
        seen();
        if ('seq' in it && it.seq === 8) break;
      }
    })();
    const post = (n: number): Promise<Response> =>
      fetch(`${srv.url}/v1/topics/${TOPIC}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ data: { n } }),
      });
    await post(1);
    // Seq 1 reaches the SDK first, so it knows where it stands.
    await new Promise<void>((r) => {
      seen = () => items.length > 0 && r();
      seen();
    });
    for (let n = 2; n <= 8; n++) expect((await post(n)).status).toBe(201);
    await reading;
    const first = (await client.history(TOPIC)).firstSeq;
    expect(first).toBeGreaterThan(2);
    const kept = Array.from({ length: 8 - first + 1 }, (_, i) => first + i);
    expect(items).toEqual([
      1,
      { kind: 'gap', topic: TOPIC, epoch: expect.any(String), missing: { from: 2, to: first - 1 } },
      ...kept,
    ]);
  });
});
