import { describe, expect, it } from 'vitest';
import { publishRange, startServer, tempDir, useCleanups, waitFor } from '@rill/testkit';
import { WebhookReceiver, checkDeliveries } from '@rill/testkit/webhooks';
import type { RillConfigInput } from '../src/config.js';
import { LmdbEngine } from '../src/engine/lmdb.js';

/**
 * Outgoing webhooks against a real receiver over loopback (docs/webhooks.md): retries through
 * failures and a timeout, dead letters, a topic deleted and written again, and a restart on lmdb
 * that skips nothing. Every request's signature is checked by the receiver.
 */

const SECRET = 'webhook-test-secret-0123456789abcdef';
const { cleanups } = useCleanups();

function webhook(url: string, extra: Record<string, unknown> = {}): RillConfigInput['webhooks'] {
  return [
    {
      name: 'orders',
      url,
      topics: ['orders.>'],
      secret: SECRET,
      batch: { maxEvents: 10 },
      timeout: 500,
      retry: { initial: 20, max: 100 },
      ...extra,
    },
  ];
}

async function receiver(): Promise<WebhookReceiver> {
  const r = await WebhookReceiver.start([SECRET]);
  cleanups.push(() => r.close());
  return r;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('webhooks', () => {
  it('retries through 500s and a timeout, then delivers every event once, in order, signed', async () => {
    const hook = await receiver();
    hook.plan = [500, 500, 'hang', 503];
    const { url, close } = await startServer({ webhooks: webhook(hook.url) });
    cleanups.push(close);
    await Promise.all([
      publishRange(url, 'orders.a', 1, 30, 3),
      publishRange(url, 'orders.b', 1, 20, 2),
      publishRange(url, 'other.x', 1, 5),
    ]);
    await waitFor(() => hook.acceptedIds().size >= 50, 15_000);
    checkDeliveries(
      hook,
      new Map([
        ['orders.a', range(1, 30)],
        ['orders.b', range(1, 20)],
      ]),
    );
    // The failures were met and retried: the first batch went four times more, same delivery id.
    expect(hook.requests.slice(0, 5).map((r) => r.answer)).toEqual([500, 500, 'hang', 503, 200]);
    expect(hook.requests.slice(0, 5).map((r) => r.attempt)).toEqual([1, 2, 3, 4, 5]);
    expect(new Set(hook.requests.slice(0, 5).map((r) => r.delivery)).size).toBe(1);
    expect(hook.requests.every((r) => r.webhook === 'orders')).toBe(true);
    expect(hook.requests.every((r) => r.events.length <= 10)).toBe(true);
  });

  it('moves a batch that failed maxAttempts times to the dead-letter topic and goes on', async () => {
    const hook = await receiver();
    hook.otherwise = 500;
    const { url, close } = await startServer({
      webhooks: webhook(hook.url, { maxAttempts: 3, deadLetterTopic: 'dead.orders' }),
    });
    cleanups.push(close);
    await publishRange(url, 'orders.a', 1, 5, 5);
    const dead = async (): Promise<
      {
        type: string;
        data: { attempts: number; failure: { status: number }; event: { seq: number; id: string } };
      }[]
    > => {
      const res = await fetch(`${url}/v1/topics/dead.orders/events`);
      if (res.status === 404) return [];
      return ((await res.json()) as { events: never[] }).events;
    };
    await waitFor(async () => (await dead()).length >= 5, 15_000);
    const letters = await dead();
    expect(letters.map((l) => l.data.event.seq)).toEqual([1, 2, 3, 4, 5]);
    for (const l of letters) {
      expect(l.type).toBe('rill.webhook.failed');
      expect(l.data.attempts).toBe(3);
      expect(l.data.failure.status).toBe(500);
      expect(l.data.event.id).toMatch(/^orders\.a:[A-Za-z0-9]+:\d+$/);
    }
    expect(hook.requests.length).toBe(3);
    // The loop went on: the receiver is back and the next events arrive.
    hook.otherwise = 200;
    await publishRange(url, 'orders.a', 6, 8);
    await waitFor(() => hook.accepted.length >= 3, 15_000);
    expect(hook.accepted.map((e) => e.seq)).toEqual([6, 7, 8]);
    expect((await dead()).length).toBe(5);
  });

  it('delivers a topic deleted and written again from the new epoch, without stalling', async () => {
    const hook = await receiver();
    const { url, close } = await startServer({ webhooks: webhook(hook.url) });
    cleanups.push(close);
    await publishRange(url, 'orders.r', 1, 5);
    await waitFor(() => hook.accepted.length >= 5, 15_000);
    const del = await fetch(`${url}/v1/topics/orders.r`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    await publishRange(url, 'orders.r', 1, 3);
    await waitFor(() => hook.accepted.length >= 8, 15_000);
    await publishRange(url, 'orders.r', 4, 4);
    await waitFor(() => hook.accepted.length >= 9, 15_000);
    const epochs = hook.accepted.map((e) => e.id.split(':')[1]);
    expect(new Set(epochs.slice(0, 5)).size).toBe(1);
    expect(new Set(epochs.slice(5)).size).toBe(1);
    expect(epochs[5]).not.toBe(epochs[0]);
    expect(hook.accepted.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 1, 2, 3, 4]);
    expect(hook.requests.every((r) => r.verified)).toBe(true);
  });
});

describe('webhooks on lmdb', () => {
  it('resumes after a restart from the stored cursor: events stored while Rill was down are delivered, nothing skipped', async () => {
    const dir = tempDir('rill-webhooks-');
    cleanups.push(dir.remove);
    const hook = await receiver();
    const config: RillConfigInput = {
      engine: 'lmdb',
      dataDir: dir.path,
      webhooks: webhook(hook.url),
    };
    let server = await startServer(config);
    await publishRange(server.url, 'orders.a', 1, 25, 5);
    await waitFor(() => hook.acceptedIds().size >= 25, 15_000);
    await server.close();

    // Rill is down: more events, and a topic it has never seen, go into its store.
    const engine = new LmdbEngine({ path: dir.path });
    for (let n = 26; n <= 40; n += 5) {
      await engine.append(
        'orders.a',
        range(n, n + 4).map((i) => ({ data: JSON.stringify({ n: i }) })),
      );
    }
    await engine.append('orders.new', [{ data: '1' }, { data: '2' }]);
    await engine.close();
    const before = hook.accepted.length;

    server = await startServer(config);
    cleanups.push(server.close);
    await waitFor(() => hook.acceptedIds().size >= 42, 15_000);
    checkDeliveries(
      hook,
      new Map([
        ['orders.a', range(1, 40)],
        ['orders.new', [1, 2]],
      ]),
    );
    // Resumed from the stored cursor, not from the start.
    const again = hook.accepted.slice(before).filter((e) => e.topic === 'orders.a' && e.seq <= 25);
    expect(again).toEqual([]);
  });
});
