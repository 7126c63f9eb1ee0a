/**
 * Limits held across two nodes sharing a broker, on Redis and on NATS: an API key allowed N
 * publishes gets N over both nodes together, not N on each; a connection limit counts the streams
 * open on either node; the counts of a node that stops exchanging (dies) are dropped by the
 * others. Exchanges are awaited (`sharedLimits.sync()`), not slept for.
 */
import { describe, expect, it } from 'vitest';
import type { RillConfigInput } from '../src/config.js';
import type { RillServer } from '../src/server.js';
import { openSse, startServer, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, authConfig, bearer } from '@rill/testkit/auth';
import { dropStreams, SHARED_NATS_URL, uniqueNatsPrefix } from '@rill/testkit/nats';
import { dropPrefix, SHARED_REDIS_URL, uniquePrefix } from '@rill/testkit/redis';

const { cleanups } = useCleanups();

const brokers = [
  {
    name: 'redis',
    config: (): RillConfigInput => {
      const prefix = uniquePrefix('rl');
      cleanups.push(() => dropPrefix(SHARED_REDIS_URL, prefix));
      return { engine: 'redis', redis: { url: SHARED_REDIS_URL, prefix } };
    },
  },
  {
    name: 'nats',
    config: (): RillConfigInput => {
      const prefix = uniqueNatsPrefix('rl');
      cleanups.push(() => dropStreams(SHARED_NATS_URL, prefix));
      return { engine: 'nats', nats: { url: SHARED_NATS_URL, prefix } };
    },
  },
] as const;

async function twoNodes(
  base: RillConfigInput,
): Promise<Array<{ url: string; server: RillServer }>> {
  const nodes = [];
  for (let i = 0; i < 2; i++) {
    const n = await startServer(base);
    cleanups.push(() => n.close());
    nodes.push(n);
  }
  return nodes;
}

/**
 * Both nodes exchange until each holds the other's record of `subject` (NATS delivers the other
 * node's message asynchronously: exchanges repeat until it arrived).
 */
async function exchange(nodes: Array<{ server: RillServer }>, subject: string): Promise<void> {
  await waitFor(
    async () => {
      for (const n of nodes) await n.server.sharedLimits!.sync();
      return nodes.every((n) => n.server.sharedLimits!.peers(subject) === nodes.length - 1);
    },
    10_000,
    10,
  );
}

describe.each(brokers)('limits across two nodes on $name', ({ config }) => {
  it('a key limited to N publishes gets N over both nodes, not N on each', async () => {
    const k = apiKey('shared', { publish: ['>'], subscribe: ['>'] });
    const [a, b] = await twoNodes({
      ...config(),
      auth: authConfig({ apiKeys: [k.entry] }),
      // About nothing refills during the test: 4 now, then one every 25 s. A node charges another
      // node's first-seen record only if that node started counting within 5 intervals: a long
      // interval (the test exchanges by itself) keeps a loaded machine's slow start inside it.
      rateLimits: {
        perKey: { publishesPerSecond: { rate: 0.04, burst: 4 } },
        syncInterval: 2_000,
      },
    } as RillConfigInput);
    expect(a!.server.sharedLimits).not.toBeNull();
    const post = (url: string) =>
      fetch(`${url}/v1/topics/shared.t/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...bearer(k.key) },
        body: '{"data":1}',
      });
    // Two on each node.
    for (const n of [a!, b!, a!, b!]) expect((await post(n.url)).status).toBe(201);
    await exchange([a!, b!], 'key:shared');
    // Each node saw the other's two: the key's four are spent on both.
    for (const n of [a!, b!]) {
      const res = await post(n.url);
      expect(res.status).toBe(429);
      expect(((await res.json()) as { error: unknown }).error).toMatchObject({
        code: 'rate_limited',
        limit: 'publishesPerSecond',
        scope: 'key',
      });
    }
  });

  it('a connection limit counts streams on either node; a dead node’s counts expire', async () => {
    const [a, b] = await twoNodes({
      ...config(),
      rateLimits: {
        exemptAddresses: [],
        perAddress: { connections: 2 },
        syncInterval: 100,
      },
    } as RillConfigInput);
    const s1 = await openSse(`${a!.url}/v1/topics/t/stream`);
    const s2 = await openSse(`${b!.url}/v1/topics/t/stream`);
    cleanups.push(() => (s1.close(), s2.close()));
    const remote = (n: { server: RillServer }) =>
      n.server.limiter.get('address:127.0.0.1')!.remote.connections;
    await exchange([a!, b!], 'address:127.0.0.1');
    await waitFor(async () => {
      await a!.server.sharedLimits!.sync();
      await b!.server.sharedLimits!.sync();
      return remote(a!) === 1 && remote(b!) === 1;
    });
    const refused = await fetch(`${a!.url}/v1/topics/t/stream`);
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: unknown }).error).toMatchObject({
      limit: 'connections',
      scope: 'address',
      limitValue: 2,
    });
    // One closes on node A: node B lets one in again.
    s1.close();
    await waitFor(() => a!.server.limiter.get('address:127.0.0.1')?.connections === 0);
    await waitFor(async () => {
      await a!.server.sharedLimits!.sync();
      await b!.server.sharedLimits!.sync();
      return remote(b!) === 0;
    });
    const s3 = await openSse(`${b!.url}/v1/topics/t/stream`);
    cleanups.push(() => s3.close());
    expect((await fetch(`${b!.url}/v1/topics/t/stream`)).status).toBe(429);
    // B holds both now. Node B stops exchanging (as a dead node does) with its streams open:
    // after the freshness window its counts no longer hold on node A.
    await waitFor(async () => {
      await b!.server.sharedLimits!.sync();
      await a!.server.sharedLimits!.sync();
      return remote(a!) === 2;
    });
    expect((await fetch(`${a!.url}/v1/topics/t/stream`)).status).toBe(429);
    await b!.server.sharedLimits!.close();
    await waitFor(
      async () => {
        await a!.server.sharedLimits!.sync();
        return remote(a!) === 0;
      },
      15_000,
      100,
    );
    const s4 = await openSse(`${a!.url}/v1/topics/t/stream`);
    s4.close();
  });
});
