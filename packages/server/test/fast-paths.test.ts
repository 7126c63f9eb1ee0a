import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createServer } from '../src/server.js';
import type { RillServer } from '../src/server.js';
import type { WsWriter } from '../src/net/ws-sink.js';
import { publish, startServer, useCleanups } from '@rill/testkit';
import { WsClient, wsUrl } from '@rill/testkit/ws';

/**
 * The fast paths that rely on dependency internals fall back silently when those change (slower,
 * still correct), so these tests check that they are taken. The detached SSE stream has its own
 * in transports.test.ts ('detached streams').
 */

const { cleanups } = useCleanups();

/** The WebSocket writers of the hub's subscriptions to `topic` (white-box). */
function writersOf(server: RillServer, topic: string): WsWriter[] {
  const subs = (
    server.hub as unknown as { subs: Set<{ sink: unknown; states: Map<string, unknown> }> }
  ).subs;
  return [...subs]
    .filter((s) => s.states.has(topic))
    .map((s) => (s.sink as unknown as { writer: WsWriter }).writer);
}

describe('fast paths', () => {
  it('are all on, and the server says so at start-up', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    const server = await createServer(
      { engine: 'memory', port: 0 },
      { logger: pino({ level: 'info' }, sink) },
    );
    cleanups.push(() => server.close());
    const line = lines.find((l) => l.msg === 'fast paths');
    expect(line).toMatchObject({
      level: 30,
      fastPaths: { detachedStreams: true, wsRawFrames: true },
    });
    expect(lines.filter((l) => (l.level as number) >= 40)).toEqual([]);
  });

  it('write WebSocket events to the socket as prebuilt frames, of every header size', async () => {
    const { server, url, close } = await startServer({ limits: { maxEventBytes: 256 * 1024 } });
    cleanups.push(close);
    const client = await WsClient.open(wsUrl(url));
    cleanups.push(() => client.terminate());
    await client.request({ op: 'subscribe', topics: ['fp.ws'] });
    const [writer] = writersOf(server, 'fp.ws');
    expect(writer).toBeDefined();
    const before = writer!.rawWrites;
    // Payload lengths under 126, under 65536 and above: the three header forms.
    const sizes = [1, 300, 100_000];
    for (const n of sizes) {
      expect((await publish(url, 'fp.ws', { data: 'x'.repeat(n) })).status).toBe(201);
      await client.until(() => client.events().some((e) => e.data === 'x'.repeat(n)));
    }
    expect(client.events().map((e) => (e.data as string).length)).toEqual(sizes);
    // One raw write per delivery: none went through ws.send.
    expect(writer!.rawWrites - before).toBe(sizes.length);
  });

  it('leave WebSocket messages to ws when permessage-deflate is in use', async () => {
    const { server, url, close } = await startServer({ ws: { perMessageDeflate: true } });
    cleanups.push(close);
    const client = await WsClient.open(wsUrl(url), { perMessageDeflate: true });
    cleanups.push(() => client.terminate());
    await client.request({ op: 'subscribe', topics: ['fp.deflate'] });
    const [writer] = writersOf(server, 'fp.deflate');
    await publish(url, 'fp.deflate', [{ data: 'a' }, { data: 'b' }]);
    await client.until(() => client.events().length === 2);
    expect(client.events().map((e) => e.data)).toEqual(['a', 'b']);
    expect(writer!.rawWrites).toBe(0);
  });
});
