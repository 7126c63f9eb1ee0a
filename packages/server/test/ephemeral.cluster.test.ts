import { describe, expect, it } from 'vitest';
import { openSse, spawnServer, useCleanups, type SseStream } from '@rill/testkit';
import { natsBackend, redisBackend } from '@rill/testkit/brokers';
import { WsClient, wsUrl, type WsMsg } from '@rill/testkit/ws';

/**
 * Ephemeral events across two `rill serve` nodes sharing Redis or NATS: published through node A,
 * one reaches the live SSE and WebSocket subscribers of node B, takes no seq (the next stored
 * event has the next seq), and is in neither node's history nor in a resume on either transport.
 */

interface Eph {
  topic: string;
  ephemeral?: boolean;
  type?: string;
  data: unknown;
  seq?: number;
  id?: string;
}

/** What an SSE stream got: `seq` for a stored event, `eph:<type>` for an ephemeral one. */
function sseLog(s: SseStream): string[] {
  return s.frames
    .filter((f) => f.data !== undefined && f.event !== 'reset' && f.event !== 'error')
    .map((f) => {
      const ev = JSON.parse(f.data!) as Eph;
      return ev.ephemeral ? `eph:${ev.type}` : String(ev.seq);
    });
}

/** The same for a WebSocket's `event` messages. */
function wsLog(c: WsClient): string[] {
  return c.messages
    .filter((m) => m.op === 'event')
    .map((m) => {
      const ev = m.event as unknown as Eph;
      return ev.ephemeral ? `eph:${ev.type}` : String(ev.seq);
    });
}

async function post(url: string, topic: string, body: unknown): Promise<Response> {
  return fetch(`${url}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

async function stored(url: string, topic: string, n: number): Promise<void> {
  const res = await post(url, topic, { data: { n } });
  expect(res.status).toBe(201);
  expect(((await res.json()) as { events: { seq: number }[] }).events[0]!.seq).toBe(n);
}

for (const backend of [redisBackend('rilleph'), natsBackend('re')])
  describe(`ephemeral events across two ${backend.engine} nodes`, () => {
    const { cleanups, track } = useCleanups();

    it('one published through A reaches B’s live SSE and WebSocket subscribers, takes no seq, and is never in history or a resume', async () => {
      cleanups.push(backend.cleanup);
      const args = ['--engine', backend.engine, '--port', '0', ...backend.args];
      const a = track(await spawnServer(args, backend.env));
      const b = track(await spawnServer(args, backend.env));
      const topic = 'eph.room';
      await stored(a.url, topic, 1);

      const sse = await openSse(`${b.url}/v1/topics/${topic}/stream`);
      cleanups.push(() => sse.close());
      const ws = await WsClient.open(wsUrl(b.url));
      cleanups.push(() => ws.terminate());
      expect((await ws.request({ op: 'subscribe', topics: [topic] })).op).toBe('subscribed');
      // A stored event through A reaching both: B's live feed of the topic is on the broker.
      await stored(a.url, topic, 2);
      await sse.until((f) => sseLog({ frames: f } as SseStream).includes('2'));
      await ws.until((m) => wsLog({ messages: m } as WsClient).includes('2'), 15_000);

      const eph = await post(a.url, topic, {
        type: 'typing',
        data: { user: 'ann' },
        ephemeral: true,
      });
      expect(eph.status).toBe(202);
      expect(await eph.json()).toMatchObject({ topic, ephemeral: true, count: 1 });
      // The next stored event gets the next seq: the ephemeral one took none.
      await stored(a.url, topic, 3);

      await sse.until((f) => {
        const log = sseLog({ frames: f } as SseStream);
        return log.includes('eph:typing') && log.includes('3');
      });
      await ws.until((m) => {
        const log = wsLog({ messages: m } as WsClient);
        return log.includes('eph:typing') && log.includes('3');
      }, 15_000);
      expect(sseLog(sse).filter((x) => x === 'eph:typing')).toHaveLength(1);
      expect(wsLog(ws).filter((x) => x === 'eph:typing')).toHaveLength(1);
      const frame = sse.frames.find((f) => f.event === 'typing')!;
      expect(frame.id).toBeUndefined();
      const onSse = JSON.parse(frame.data!) as Eph;
      expect(onSse).toMatchObject({
        topic,
        ephemeral: true,
        type: 'typing',
        data: { user: 'ann' },
      });
      expect(onSse).not.toHaveProperty('seq');
      expect(onSse).not.toHaveProperty('id');
      const msg = ws.messages.find((m) => m.op === 'event' && m.event!.type === 'typing')!;
      expect(msg.event).toMatchObject({ topic, ephemeral: true, data: { user: 'ann' } });
      expect(msg.event).not.toHaveProperty('seq');
      expect(msg).not.toHaveProperty('cursor');

      // History on either node: the three stored events only.
      for (const url of [a.url, b.url]) {
        const page = (await (await fetch(`${url}/v1/topics/${topic}/events`)).json()) as {
          lastSeq: number;
          events: Eph[];
        };
        expect(page.lastSeq).toBe(3);
        expect(page.events.map((e) => [e.seq, e.ephemeral])).toEqual([
          [1, undefined],
          [2, undefined],
          [3, undefined],
        ]);
      }

      // A resume from seq 1 on B (SSE, Last-Event-ID) and on A (WebSocket cursor): 2, 3, then
      // what comes next; the ephemeral event is not replayed.
      const first = sse.frames.find((f) => f.id !== undefined)!;
      expect(JSON.parse(first.data!)).toMatchObject({ seq: 2 });
      const sseFrom1 = first.id!.replace(/:2$/, ':1');
      const resumed = await openSse(`${b.url}/v1/topics/${topic}/stream`, {
        'last-event-id': sseFrom1,
      });
      cleanups.push(() => resumed.close());
      const ws2 = await WsClient.open(wsUrl(a.url));
      cleanups.push(() => ws2.terminate());
      const sub = await ws2.request({ op: 'subscribe', topics: [topic], cursor: sseFrom1 });
      expect(sub.op).toBe('subscribed');
      await resumed.until((f) => sseLog({ frames: f } as SseStream).includes('3'));
      await ws2.until((m) => wsLog({ messages: m } as WsClient).includes('3'), 15_000);
      await stored(b.url, topic, 4);
      await resumed.until((f) => sseLog({ frames: f } as SseStream).includes('4'));
      await ws2.until((m) => wsLog({ messages: m } as WsClient).includes('4'), 15_000);
      expect(sseLog(resumed)).toEqual(['2', '3', '4']);
      expect(wsLog(ws2)).toEqual(['2', '3', '4']);
      expect(resumed.frames.some((f) => f.event === 'reset')).toBe(false);
      expect(ws2.messages.filter((m: WsMsg) => m.op === 'reset')).toEqual([]);
    });
  });
