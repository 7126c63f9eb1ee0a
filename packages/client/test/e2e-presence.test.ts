/**
 * The SDK's presence against a real server: `client.presence` and `presenceCount`, and the joins
 * and leaves a subscription asked for over SSE and WebSocket, interleaved with its events (which
 * they do not disturb: every event arrives once, the cursor stays an event's).
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startServer, useCleanups, waitFor } from '@rill/testkit';
import { authConfig, sign } from '@rill/testkit/auth';
import { createClient, type PresenceChange, type RillEvent } from '../src/index.js';

const GRACE = 200;

describe('presence through the SDK', () => {
  const { cleanups } = useCleanups();

  for (const transport of ['sse', 'ws'] as const)
    it(`${transport}: lists members, hears joins and leaves, events unaffected`, async () => {
      const s = await startServer({ auth: authConfig(), presence: { grace: GRACE } });
      cleanups.push(s.close);
      const client = (sub: string) => {
        const c = createClient({
          url: s.url,
          transport,
          token: () =>
            sign({
              sub,
              subscribe: ['room'],
              publish: ['room'],
              info: { name: sub.toUpperCase() },
            }),
          WebSocket,
        });
        cleanups.push(() => c.close());
        return c;
      };
      const bob = client('bob');
      const changes: PresenceChange[] = [];
      const events: RillEvent[] = [];
      let open = false;
      const sub = bob.subscribe('room', {
        onPresence: (c) => changes.push(c),
        onEvent: (e) => events.push(e),
        onState: (c) => (open ||= c.state === 'open'),
      });
      await waitFor(() => open);
      await waitFor(() => changes.some((c) => c.sub === 'bob'));

      const alice = client('alice');
      const aliceSub = alice.subscribe('room');
      await waitFor(() => changes.some((c) => c.kind === 'join' && c.sub === 'alice'));
      expect(changes.find((c) => c.sub === 'alice')).toEqual({
        kind: 'join',
        topic: 'room',
        sub: 'alice',
        info: { name: 'ALICE' },
      });
      const page = await bob.presence('room', { limit: 1 });
      expect(page).toMatchObject({
        topic: 'room',
        count: 2,
        anonymous: 0,
        next: 'alice',
        members: [{ sub: 'alice', info: { name: 'ALICE' }, connections: 1 }],
      });
      expect((await bob.presence('room', { after: 'alice' })).members.map((m) => m.sub)).toEqual([
        'bob',
      ]);
      expect(await bob.presenceCount('room')).toEqual({ topic: 'room', count: 2, anonymous: 0 });

      await alice.publish('room', { n: 1 });
      aliceSub.close();
      await waitFor(() => changes.some((c) => c.kind === 'leave' && c.sub === 'alice'));
      await alice.publish('room', { n: 2 });
      await waitFor(() => events.length === 2);
      expect(events.map((e) => e.data)).toEqual([{ n: 1 }, { n: 2 }]);
      expect(sub.cursor).toBe(events[1]!.id);
      expect(changes.map((c) => `${c.kind}:${c.sub}`)).toEqual([
        'join:bob',
        'join:alice',
        'leave:alice',
      ]);
      const refused = await client('eve')
        .presence('elsewhere')
        .catch((e: unknown) => e);
      expect(refused).toMatchObject({ code: 'forbidden' });
    });
});
