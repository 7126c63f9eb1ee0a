import { describe, expect, it } from 'vitest';
import { openSse, spawnServer, useCleanups, waitFor, type SseStream } from '@rill/testkit';
import { SECRET, bearer, sign } from '@rill/testkit/auth';
import { natsBackend, redisBackend } from '@rill/testkit/brokers';

/**
 * Presence across two `rill serve` nodes sharing Redis or NATS: a member on one node is listed and
 * announced on the other, a move between nodes within the grace period is no leave, and the
 * members of a node SIGKILLed expire within `presence.ttl` plus one re-read (a third of it).
 */

const TTL_MS = 3_000;
const GRACE_MS = 1_000;

/** The `sub` of every join or leave notice a stream got, in order: `join:alice`. */
function notices(s: SseStream): string[] {
  return s.frames
    .filter((f) => f.event === 'join' || f.event === 'leave')
    .map((f) => `${f.event}:${(JSON.parse(f.data!) as { sub: string }).sub}`);
}

async function page(
  url: string,
  topic: string,
  token: string,
): Promise<{ sub: string; connections: number }[]> {
  const res = await fetch(`${url}/v1/topics/${topic}/presence`, { headers: bearer(token) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { members: { sub: string; connections: number }[] }).members;
}

async function members(url: string, topic: string, token: string): Promise<string[]> {
  return (await page(url, topic, token)).map((m) => m.sub);
}

for (const backend of [redisBackend('rillpresence'), natsBackend('rp')])
  describe(`presence across two ${backend.engine} nodes`, () => {
    const { cleanups, track } = useCleanups();

    it('lists and announces members of the other node; a move within the grace period is no leave; a SIGKILLed node’s members expire', async () => {
      cleanups.push(backend.cleanup);
      const env = {
        ...backend.env,
        RILL_AUTH__JWT__SECRET: SECRET,
        RILL_PRESENCE__TTL: `${TTL_MS}ms`,
        RILL_PRESENCE__GRACE: `${GRACE_MS}ms`,
      };
      const args = ['--engine', backend.engine, '--port', '0', ...backend.args];
      const a = track(await spawnServer(args, env));
      const b = track(await spawnServer(args, env));
      const token = (sub: string) => sign({ sub, subscribe: ['room'] });
      const streams: SseStream[] = [];
      cleanups.push(() => streams.forEach((s) => s.close()));
      const open = async (url: string, sub: string, query = '') => {
        const s = await openSse(`${url}/v1/topics/room/stream${query}`, bearer(await token(sub)));
        expect(s.status).toBe(200);
        streams.push(s);
        return s;
      };
      const watcherToken = await token('watcher');
      const watcher = await open(a.url, 'watcher', '?presence=true');

      // A member on B: announced and listed on A.
      const alice = await open(b.url, 'alice');
      await watcher.until((f) => notices({ frames: f } as SseStream).includes('join:alice'));
      expect(await members(a.url, 'room', watcherToken)).toEqual(['alice', 'watcher']);
      expect(await members(b.url, 'room', watcherToken)).toEqual(['alice', 'watcher']);

      // Alice moves from B to A within the grace period: B saw her stream close (she is listed
      // with no connection, in her grace period) before she opens one on A. Carol, on B, leaves
      // just after she left B: carol's leave comes a grace period later, by when alice's would
      // have come too.
      const carol = await open(b.url, 'carol');
      await watcher.until((f) => notices({ frames: f } as SseStream).includes('join:carol'));
      alice.close();
      await waitFor(
        async () =>
          (await page(a.url, 'room', watcherToken)).find((m) => m.sub === 'alice')?.connections ===
          0,
        GRACE_MS * 5,
        20,
      );
      await open(a.url, 'alice');
      carol.close();
      await watcher.until(
        (f) => notices({ frames: f } as SseStream).includes('leave:carol'),
        TTL_MS * 5,
      );
      expect(notices(watcher)).toEqual(['join:watcher', 'join:alice', 'join:carol', 'leave:carol']);
      expect(await members(a.url, 'room', watcherToken)).toEqual(['alice', 'watcher']);

      // Bob on B; B is SIGKILLed: bob expires from A's answers within the ttl, and A announces it.
      await open(b.url, 'bob');
      await watcher.until((f) => notices({ frames: f } as SseStream).includes('join:bob'));
      expect(await members(a.url, 'room', watcherToken)).toEqual(['alice', 'bob', 'watcher']);
      const killedAt = Date.now();
      b.proc.kill('SIGKILL');
      await b.exited;
      await waitFor(
        async () => !(await members(a.url, 'room', watcherToken)).includes('bob'),
        TTL_MS * 5,
        100,
      );
      const expiredAfter = Date.now() - killedAt;
      await watcher.until(
        (f) => notices({ frames: f } as SseStream).includes('leave:bob'),
        TTL_MS * 5,
      );
      const announcedAfter = Date.now() - killedAt;
      // Within the ttl plus the time to notice (a re-read every third of it), with slack for a
      // busy machine.
      expect(expiredAfter).toBeLessThanOrEqual(TTL_MS + TTL_MS / 3 + 1_500);
      expect(announcedAfter).toBeLessThanOrEqual(TTL_MS + TTL_MS / 3 + 1_500);
      expect(await members(a.url, 'room', watcherToken)).toEqual(['alice', 'watcher']);
      console.log(
        `${backend.engine}: SIGKILLed node's member gone from queries after ${expiredAfter} ms, leave announced after ${announcedAfter} ms (ttl ${TTL_MS} ms)`,
      );
    });
  });
