import { describe, expect, it } from 'vitest';
import {
  freePort,
  publish,
  spawnServer,
  tempDir,
  useCleanups,
  type ChildServer,
} from '@rill/testkit';
import { WsClient, wsUrl } from '@rill/testkit/ws';

const { cleanups, track } = useCleanups();

async function open(url: string): Promise<WsClient> {
  const c = await WsClient.open(wsUrl(url));
  cleanups.push(() => c.terminate());
  return c;
}

function serve(port: number, path: string): Promise<ChildServer> {
  return spawnServer(['--engine', 'lmdb', '--data-dir', path, '--port', String(port)]);
}

describe('WebSocket resume across a server restart', () => {
  it('continues from the last cursor with nothing lost or repeated', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const port = await freePort();
    const child = track(await serve(port, dir.path));
    const url = child.url;

    const reader = await open(url);
    const sub = await reader.request({ op: 'subscribe', topics: ['rs.orders', 'rs.c.*'] });
    expect(sub.op).toBe('subscribed');
    const writer = await open(url);
    const topics = ['rs.orders', 'rs.c.x', 'rs.c.y'];
    for (let i = 0; i < 30; i++) {
      writer.send({ op: 'publish', id: i, topic: topics[i % 3], data: { n: i } });
    }
    await writer.until((m) => m.filter((x) => x.op === 'ack').length === 30, 10_000, 'acks');
    await reader.until((m) => m.filter((x) => x.op === 'event').length === 30, 10_000, 'events');
    const cursor = reader.resumeCursor(sub.sub!)!;

    // Graceful stop: every socket is told to reconnect (4001).
    child.proc.kill('SIGTERM');
    expect((await reader.closed).code).toBe(4001);
    expect((await writer.closed).code).toBe(4001);
    expect(await child.exited).toBe(0);

    track(await serve(port, dir.path));
    // Published while the subscriber is away, including a topic its pattern will match.
    for (let i = 30; i < 50; i++) {
      const topic = i < 45 ? topics[i % 3]! : 'rs.c.new';
      expect((await publish(url, topic, { data: { n: i } })).status).toBe(201);
    }

    const again = await open(url);
    const resumed = await again.request({
      op: 'subscribe',
      topics: ['rs.orders', 'rs.c.*'],
      cursor,
    });
    expect(resumed).toMatchObject({ op: 'subscribed', exact: true });
    // The log survived the restart: same epochs.
    const heads = resumed.heads as Record<string, { epoch: string; lastSeq: number }>;
    for (const e of reader.events()) expect(e.id.split(':')[1]).toBe(heads[e.topic]!.epoch);

    const pub = await open(url);
    for (let i = 50; i < 60; i++) {
      const a = await pub.request({ op: 'publish', topic: topics[i % 3], data: { n: i } });
      expect(a.op).toBe('ack');
    }
    await again.until((m) => m.filter((x) => x.op === 'event').length === 30, 10_000, 'resumed');

    const all = [...reader.events(), ...again.events()];
    expect(all.map((e) => (e.data as { n: number }).n).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 60 }, (_, i) => i),
    );
    const byTopic = new Map<string, number[]>();
    for (const e of all) byTopic.set(e.topic, [...(byTopic.get(e.topic) ?? []), e.seq]);
    for (const [topic, seqs] of byTopic) {
      expect(seqs, topic).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    }
    expect(again.messages.some((m) => m.op === 'reset')).toBe(false);
  });
});
