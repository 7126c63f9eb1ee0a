import { describe, expect, it } from 'vitest';
import { publishRange, spawnServer, useCleanups, waitFor } from '@rill/testkit';
import { SHARED_NATS_URL, dropStreams, uniqueNatsPrefix } from '@rill/testkit/nats';
import { SHARED_REDIS_URL, dropPrefix, uniquePrefix } from '@rill/testkit/redis';
import { WebhookReceiver, checkDeliveries } from '@rill/testkit/webhooks';

/**
 * One delivery loop per webhook across a cluster: two `rill serve` nodes sharing Redis or NATS
 * deliver each event once (a lease in the broker picks the node); when the leader is SIGKILLed the
 * other takes the lease once it expires (`webhookLease`) and goes on from the stored cursor, with
 * nothing skipped.
 */

const SECRET = 'webhook-cluster-secret-0123456789abcdef';
const LEASE_MS = 2_000;

interface Backend {
  engine: 'redis' | 'nats';
  args: string[];
  env: Record<string, string>;
  cleanup: () => Promise<void>;
}

function redisBackend(): Backend {
  const prefix = uniquePrefix('rillwebhooks');
  return {
    engine: 'redis',
    args: ['--redis-url', SHARED_REDIS_URL],
    env: { RILL_REDIS__PREFIX: prefix },
    cleanup: () => dropPrefix(SHARED_REDIS_URL, prefix),
  };
}

function natsBackend(): Backend {
  const prefix = uniqueNatsPrefix('rw');
  return {
    engine: 'nats',
    args: ['--nats-url', SHARED_NATS_URL],
    env: { RILL_NATS__PREFIX: prefix },
    cleanup: () => dropStreams(SHARED_NATS_URL, prefix),
  };
}

/** Whether the node at `url` says it runs the webhook's loop (its leader gauge). */
async function leads(url: string): Promise<boolean> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return /^rill_webhook_leader\{webhook="orders"\} 1$/m.test(text);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

for (const make of [redisBackend, natsBackend]) {
  const backend = make();
  describe(`webhooks on two ${backend.engine} nodes`, () => {
    const { cleanups, track } = useCleanups();

    it('deliver each event once; the leader SIGKILLed, the other takes over and skips nothing', async () => {
      cleanups.push(backend.cleanup);
      const hook = await WebhookReceiver.start([SECRET]);
      cleanups.push(() => hook.close());
      const env = {
        ...backend.env,
        RILL_WEBHOOK_LEASE: `${LEASE_MS}ms`,
        RILL_WEBHOOKS: JSON.stringify([
          {
            name: 'orders',
            url: hook.url,
            topics: ['orders.*'],
            secret: SECRET,
            batch: { maxEvents: 20 },
            timeout: '2s',
            retry: { initial: '50ms', max: '500ms' },
          },
        ]),
      };
      const args = ['--engine', backend.engine, '--port', '0', ...backend.args];
      const nodes = [track(await spawnServer(args, env)), track(await spawnServer(args, env))];

      // Both nodes take publishes; one of them delivers, each event once.
      for (let n = 1; n <= 60; n += 10) {
        await publishRange(nodes[((n / 10) % 2) | 0]!.url, 'orders.x', n, n + 9, 5);
        await publishRange(nodes[(((n / 10) % 2) | 0) ^ 1]!.url, 'orders.y', n, n + 9, 5);
      }
      await waitFor(() => hook.acceptedIds().size >= 120, 20_000);
      expect(hook.accepted.length).toBe(120);
      const leaders = await Promise.all(nodes.map((n) => leads(n.url)));
      expect(leaders.filter(Boolean)).toHaveLength(1);
      const leader = nodes[leaders.indexOf(true)]!;
      const other = nodes[leaders.indexOf(false)]!;

      // The leader dies; the survivor takes the publishes and, once the lease expired, delivers.
      const killedAt = Date.now();
      leader.proc.kill('SIGKILL');
      await leader.exited;
      await publishRange(other.url, 'orders.x', 61, 90, 5);
      await publishRange(other.url, 'orders.y', 61, 70, 5);
      await waitFor(() => hook.acceptedIds().size >= 160, LEASE_MS * 10);
      const tookOver = Date.now() - killedAt;
      expect(await leads(other.url)).toBe(true);
      checkDeliveries(
        hook,
        new Map([
          ['orders.x', range(1, 90)],
          ['orders.y', range(1, 70)],
        ]),
      );
      // Within the lease and a third of it (the survivor tries every third), with slack for a
      // loaded machine.
      expect(tookOver).toBeLessThan(LEASE_MS * 5);
    });
  });
}
