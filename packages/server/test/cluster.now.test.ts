import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { openSse, publish, startServer, useCleanups } from '@rill/testkit';
import { SHARED_REDIS_URL, dropPrefix, uniquePrefix } from '@rill/testkit/redis';

/** A TCP proxy that delays every chunk from the client to the server by `ms` (order kept). */
async function slowProxy(target: number, ms: number) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (chunk) => setTimeout(() => upstream.write(chunk), ms));
    upstream.pipe(client);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('from=now across nodes', () => {
  const { cleanups } = useCleanups();

  it('delivers an event published on another node right after the stream opened, even when this node reaches Redis slowly', async () => {
    const prefix = uniquePrefix();
    cleanups.push(() => dropPrefix(SHARED_REDIS_URL, prefix));
    const proxy = await slowProxy(Number(new URL(SHARED_REDIS_URL).port || 6379), 300);
    cleanups.push(() => proxy.close());
    // Node A reaches Redis through a 300 ms delay; node B directly.
    const a = await startServer({
      engine: 'redis',
      redis: { url: `redis://127.0.0.1:${proxy.port}`, prefix },
    });
    cleanups.push(a.close);
    const b = await startServer({ engine: 'redis', redis: { url: SHARED_REDIS_URL, prefix } });
    cleanups.push(b.close);
    const topic = 'now.t';

    // The stream is open once its head is known: a publish the client makes after that, on any
    // node, is after the start, so it must arrive.
    const sse = await openSse(`${a.url}/v1/topics/${topic}/stream`);
    cleanups.push(() => sse.close());
    expect(sse.status).toBe(200);
    expect((await publish(b.url, topic, { data: 'first' })).status).toBe(201);
    await sse.until(() => sse.events().length === 1, 10_000);
    expect(sse.events()[0]).toMatchObject({ seq: 1, data: 'first' });
  }, 30_000);
});
