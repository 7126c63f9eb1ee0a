/**
 * A connection that dies silently (no FIN, no RST: the proxy stops passing bytes but keeps both
 * sockets open) is noticed by the SDK's idle timeout — the server's SSE heartbeats stop arriving;
 * on WebSocket the SDK's `ping` op gets no `pong` — and replaced: the event published meanwhile is
 * delivered, once.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { publish, startServer, useCleanups } from '@rill/testkit';
import { createClient, type StateChange } from '../src/index.js';
import { TcpProxy } from '@rill/testkit/proxy';

describe('dead connections', () => {
  const { cleanups } = useCleanups();

  for (const transport of ['sse', 'ws'] as const) {
    it(`${transport}: a silently dead connection is detected and replaced`, async () => {
      const srv = await startServer({ sse: { heartbeat: 100 } });
      cleanups.push(srv.close);
      const proxy = new TcpProxy(Number(new URL(srv.url).port));
      const url = await proxy.listen();
      cleanups.push(() => proxy.close());
      const client = createClient({
        url,
        transport,
        WebSocket,
        idleTimeout: 900,
        backoff: { initialDelay: 20, maxDelay: 100 },
      });
      cleanups.push(() => client.close());

      const seqs: number[] = [];
      const states: StateChange[] = [];
      let waiting: (() => void) | undefined;
      client.subscribe('dead', {
        from: 'earliest',
        onEvent: (ev) => {
          seqs.push(ev.seq);
          waiting?.();
        },
        onState: (s) => states.push(s),
      });
      const got = (n: number): Promise<void> =>
        new Promise((resolve) => {
          waiting = () => seqs.length >= n && resolve();
          waiting();
        });

      await publish(srv.url, 'dead', { data: 1 });
      await got(1);
      expect(proxy.freezeAll()).toBeGreaterThan(0);
      await publish(srv.url, 'dead', { data: 2 });
      await got(2);
      expect(seqs).toEqual([1, 2]);
      const drop = states.find((s) => s.state === 'reconnecting');
      expect(drop?.error?.message).toMatch(
        transport === 'sse' ? /went silent/ : /no answer to pings/,
      );
    });
  }
});
