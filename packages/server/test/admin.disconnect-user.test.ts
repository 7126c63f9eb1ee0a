/**
 * `DELETE /v1/connections?sub=` (api/admin.ts): every stream and WebSocket of one subject ends
 * with `disconnected_by_admin` (an SSE error frame, a WebSocket close 4010, a long-poll's 503),
 * others' stay; with the redis and nats engines every node ends its own (told through the
 * broker, cluster/). And API keys with a configured `sub` and `info`, which presence lists.
 */
import { describe, expect, it } from 'vitest';
import { openSse, startServer, useCleanups, waitFor, type SseStream } from '@rill/testkit';
import { apiKey, authConfig, bearer, sign } from '@rill/testkit/auth';
import { SHARED_NATS_URL, dropStreams, uniqueNatsPrefix } from '@rill/testkit/nats';
import { SHARED_REDIS_URL, dropPrefix, uniquePrefix } from '@rill/testkit/redis';
import { WsClient, wsUrl } from '@rill/testkit/ws';
import type { RillConfigInput } from '../src/config.js';

const token = (sub: string, admin = false) =>
  sign({ sub, subscribe: ['>'], publish: ['>'], admin });

function endedByAdmin(sse: SseStream): unknown {
  const err = sse.frames.find((f) => f.event === 'error');
  return err === undefined ? undefined : (JSON.parse(err.data!) as { code: string }).code;
}

/** `p`, or a failure after 10 s (what another node was told may never come). */
function within<T>(p: Promise<T>, ms = 10_000): Promise<T> {
  return Promise.race([
    p,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms).unref(),
    ),
  ]);
}

async function disconnect(url: string, sub: string, auth: string) {
  const res = await fetch(`${url}/v1/connections?sub=${encodeURIComponent(sub)}`, {
    method: 'DELETE',
    headers: bearer(auth),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('DELETE /v1/connections?sub=', () => {
  const { cleanups } = useCleanups();

  it("ends every stream of the subject on this node, and no one else's", async () => {
    const agent = apiKey('agent', { subscribe: ['>'] });
    const s = await startServer({
      auth: authConfig({ apiKeys: [{ ...agent.entry, sub: 'alice' }] }),
    });
    cleanups.push(s.close);
    const alice = await token('alice');
    const admin = await token('root', true);
    const sse = await openSse(`${s.url}/v1/topics/t.1/stream`, bearer(alice));
    const bob = await openSse(`${s.url}/v1/topics/t.1/stream`, bearer(await token('bob')));
    const viaKey = await openSse(`${s.url}/v1/topics/t.2/stream`, bearer(agent.key));
    cleanups.push(() => [sse, bob, viaKey].forEach((x) => x.close()));
    const ws = await WsClient.open(wsUrl(s.url), { headers: bearer(alice) });
    cleanups.push(() => ws.terminate());
    expect((await ws.request({ op: 'subscribe', topics: ['t.1'] })).op).toBe('subscribed');
    const poll = fetch(`${s.url}/v1/events?topics=t.3&wait=30`, { headers: bearer(alice) });
    await waitFor(async () => {
      const res = await fetch(`${s.url}/v1/connections`, { headers: bearer(admin) });
      return ((await res.json()) as { total: number }).total === 5;
    });

    // Only an admin may, and it must name a subject.
    expect((await disconnect(s.url, 'alice', alice)).status).toBe(403);
    const none = await fetch(`${s.url}/v1/connections`, {
      method: 'DELETE',
      headers: bearer(admin),
    });
    expect(none.status).toBe(400);

    const r = await disconnect(s.url, 'alice', admin);
    expect(r).toEqual({ status: 200, body: { sub: 'alice', disconnected: 4, cluster: false } });
    await sse.ended;
    expect(endedByAdmin(sse)).toBe('disconnected_by_admin');
    await viaKey.ended;
    expect(endedByAdmin(viaKey)).toBe('disconnected_by_admin');
    expect(await ws.closed).toEqual({ code: 4010, reason: 'disconnected_by_admin' });
    const polled = await poll;
    expect(polled.status).toBe(503);
    expect(((await polled.json()) as { error: { code: string } }).error.code).toBe(
      'disconnected_by_admin',
    );
    // Bob's stream goes on.
    expect(bob.res.closed).toBe(false);
    expect((await disconnect(s.url, 'alice', admin)).body.disconnected).toBe(0);
  });

  it('an API key with sub and info is listed in presence like a JWT subject', async () => {
    const bot = apiKey('bot', { subscribe: ['room.>'] });
    const plain = apiKey('plain', { subscribe: ['room.>'] });
    const s = await startServer({
      auth: authConfig({
        apiKeys: [{ ...bot.entry, sub: 'helper-bot', info: { name: 'Helper' } }, plain.entry],
      }),
      presence: { grace: 0 },
    });
    cleanups.push(s.close);
    const a = await openSse(`${s.url}/v1/topics/room.1/stream`, bearer(bot.key));
    const b = await openSse(`${s.url}/v1/topics/room.1/stream`, bearer(plain.key));
    cleanups.push(() => [a, b].forEach((x) => x.close()));
    const presence = async () => {
      const res = await fetch(`${s.url}/v1/topics/room.1/presence`, { headers: bearer(bot.key) });
      return (await res.json()) as { members: unknown[]; anonymous: number };
    };
    await waitFor(async () => {
      const p = await presence();
      return p.members.length === 1 && p.anonymous === 1;
    });
    expect((await presence()).members).toEqual([
      expect.objectContaining({ sub: 'helper-bot', info: { name: 'Helper' }, connections: 1 }),
    ]);
  });

  it('an API key entry refuses an info larger than 1 KiB', async () => {
    const big = apiKey('big');
    await expect(
      startServer({
        auth: authConfig({ apiKeys: [{ ...big.entry, info: { pad: 'x'.repeat(1100) } }] }),
      }),
    ).rejects.toThrow(/info.*1024 bytes/);
  });

  for (const engine of ['redis', 'nats'] as const) {
    it(`with the ${engine} engine every node ends its own streams of the subject`, async () => {
      let config: RillConfigInput;
      if (engine === 'redis') {
        const prefix = uniquePrefix('rilldisc');
        cleanups.push(() => dropPrefix(SHARED_REDIS_URL, prefix));
        config = { engine: 'redis', redis: { url: SHARED_REDIS_URL, prefix } };
      } else {
        const prefix = uniqueNatsPrefix('rd');
        cleanups.push(() => dropStreams(SHARED_NATS_URL, prefix));
        config = { engine: 'nats', nats: { url: SHARED_NATS_URL, prefix } };
      }
      // Presence off: nothing of it is under test, and it would leave buckets behind.
      config = { ...config, auth: authConfig(), presence: { enabled: false } };
      const a = await startServer(config);
      cleanups.push(a.close);
      const b = await startServer(config);
      cleanups.push(b.close);
      const alice = await token('alice');
      const onA = await openSse(`${a.url}/v1/topics/t.1/stream`, bearer(alice));
      const bobOnB = await openSse(`${b.url}/v1/topics/t.1/stream`, bearer(await token('bob')));
      cleanups.push(() => [onA, bobOnB].forEach((x) => x.close()));
      const wsOnB = await WsClient.open(wsUrl(b.url), { headers: bearer(alice) });
      cleanups.push(() => wsOnB.terminate());
      expect((await wsOnB.request({ op: 'subscribe', topics: ['t.1'] })).op).toBe('subscribed');
      const sseOnB = await openSse(`${b.url}/v1/topics/t.2/stream`, bearer(alice));
      cleanups.push(() => sseOnB.close());

      const r = await disconnect(a.url, 'alice', await token('root', true));
      expect(r).toEqual({ status: 200, body: { sub: 'alice', disconnected: 1, cluster: true } });
      await onA.ended;
      expect(endedByAdmin(onA)).toBe('disconnected_by_admin');
      expect(await within(wsOnB.closed)).toEqual({ code: 4010, reason: 'disconnected_by_admin' });
      await within(sseOnB.ended);
      expect(endedByAdmin(sseOnB)).toBe('disconnected_by_admin');
      expect(bobOnB.res.closed).toBe(false);
    });
  }
});
