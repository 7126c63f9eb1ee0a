import http from 'node:http';
import net from 'node:net';
import { expect } from 'vitest';
import { redisBackend } from './brokers.js';
import { openSse, publish, spawnServer, type ChildServer, type SseStream } from './helpers.js';
import { WsClient, wsUrl } from './ws.js';

/**
 * A TCP proxy for tests: forwards loopback connections to a target port, and on demand cuts every
 * connection mid-stream, delays bytes, or swallows the answer to a request (the request reached
 * the server; the client never hears back).
 */
export class TcpProxy {
  private server = net.createServer((c) => this.accept(c));
  private readonly pairs = new Set<{
    client: net.Socket;
    upstream: net.Socket;
    frozen?: boolean;
  }>();
  /** Upper bound of the random delay added to each chunk, ms (order is kept). */
  delayMs = 0;
  /** Answers to swallow: when a request starts with this, its connection is cut on answer. */
  swallowAnswerTo: string | undefined;
  swallowed = 0;
  connections = 0;
  port = 0;

  constructor(public targetPort: number) {}

  async listen(port = 0): Promise<string> {
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return `http://127.0.0.1:${this.port}`;
  }

  private accept(client: net.Socket): void {
    this.connections++;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair: { client: net.Socket; upstream: net.Socket; frozen?: boolean } = {
      client,
      upstream,
    };
    this.pairs.add(pair);
    let swallow = false;
    const end = (): void => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    // A reset or error on either side cuts both; a clean end (FIN) is passed on after the delayed
    // bytes before it, as a real network would.
    client.on('error', end);
    upstream.on('error', end);
    const closed = (): void => {
      if (client.destroyed && upstream.destroyed) this.pairs.delete(pair);
    };
    client.on('close', closed);
    upstream.on('close', closed);
    this.pipe(client, upstream, (chunk) => {
      if (pair.frozen) return false;
      if (this.swallowAnswerTo && chunk.toString('latin1').startsWith(this.swallowAnswerTo)) {
        this.swallowAnswerTo = undefined;
        swallow = true;
      }
    });
    this.pipe(upstream, client, () => {
      if (pair.frozen) return false;
      if (swallow) {
        this.swallowed++;
        end();
        return false;
      }
      return true;
    });
  }

  /** Forwards `from` to `to`, each chunk after a random delay, never reordering. */
  private pipe(from: net.Socket, to: net.Socket, inspect: (chunk: Buffer) => boolean | void): void {
    let chain = Promise.resolve();
    from.on('end', () => {
      chain = chain.then(() => {
        if (!to.destroyed) to.end();
      });
    });
    from.on('close', () => {
      void chain.then(() => {
        if (from.errored || !from.readableEnded) to.destroy();
      });
    });
    from.on('data', (chunk: Buffer) => {
      if (inspect(chunk) === false) return;
      const d = this.delayMs > 0 ? Math.random() * this.delayMs : 0;
      chain = chain
        .then(() => (d > 0 ? new Promise<void>((r) => setTimeout(r, d)) : undefined))
        .then(() => {
          if (!to.destroyed) to.write(chunk);
        });
    });
  }

  /**
   * Freezes every open connection: both stay open but no byte passes any more, like a peer that
   * vanished without a FIN or RST (a dead NAT entry, a pulled cable). New connections work.
   */
  freezeAll(): number {
    for (const p of this.pairs) p.frozen = true;
    return this.pairs.size;
  }

  /** Cuts every open connection (both sides, no FIN handshake: like a network failure). */
  cutAll(): number {
    const n = this.pairs.size;
    for (const p of [...this.pairs]) {
      p.client.resetAndDestroy();
      p.upstream.destroy();
      this.pairs.delete(p);
    }
    return n;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/**
 * An HTTP proxy in front of `target` that forwards every request and answer as is, except the
 * body of `text/event-stream` answers, which `onEventStream` writes to the client as it likes
 * (buffered, frames dropped …). `paths` lists the request paths it saw.
 */
export async function httpProxy(
  target: string,
  onEventStream: (upstream: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<{ url: string; paths: string[]; close: () => Promise<void> }> {
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? '');
    const up = http.request(
      `${target}${req.url}`,
      { method: req.method, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if ((upRes.headers['content-type'] ?? '').includes('text/event-stream')) {
          onEventStream(upRes, res);
        } else upRes.pipe(res);
      },
    );
    req.pipe(up);
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    paths,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/**
 * Two `rill serve --engine redis` nodes sharing a new key prefix, as the proxy recipes of
 * docs/deploy front them: SSE heartbeats every second (so a test sees one pass the proxy) and
 * `rill.test` an allowed Host. `stop` ends the nodes still running and drops the prefix (which
 * starts with `what`).
 */
export async function twoRedisNodes(what = 'rillproxy'): Promise<{
  nodes: ChildServer[];
  ports: number[];
  stop: () => Promise<void>;
}> {
  const backend = redisBackend(what);
  const nodes: ChildServer[] = [];
  const stop = async (): Promise<void> => {
    for (const n of nodes)
      if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGTERM');
    await Promise.all(nodes.map((n) => n.exited));
    await backend.cleanup();
  };
  try {
    for (let i = 0; i < 2; i++) {
      nodes.push(
        await spawnServer(['--engine', 'redis', '--port', '0', ...backend.args], {
          ...backend.env,
          RILL_SSE__HEARTBEAT: '1s',
          // The name browsers use, as docs/operations.md says to configure.
          RILL_HTTP__ALLOWED_HOSTS: 'rill.test',
        }),
      );
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, ports: nodes.map((n) => Number(new URL(n.url).port)), stop };
}

/**
 * What a reverse proxy in front of Rill must pass, checked through `url` on a new `topic`: an SSE
 * stream unbuffered (an event published after it opened arrives while it stays open, and so do
 * heartbeat comments), NDJSON's first line while the response is open, and a WebSocket upgrade
 * with the `rill.v1` subprotocol, over which a subscription gets an event published on it. Leaves
 * seqs 1 and 2 on the topic; the SSE stream is returned open (its closing is pushed on `closers`).
 */
export async function checkProxiedStreams(
  url: string,
  topic: string,
  closers: Array<() => unknown>,
): Promise<SseStream> {
  const sse = await openSse(`${url}/v1/topics/${topic}/stream?from=earliest`);
  closers.push(() => sse.close());
  expect(sse.status).toBe(200);
  expect(sse.headers['content-type']).toContain('text/event-stream');
  expect((await publish(url, topic, { data: { n: 1 } })).status).toBe(201);
  await sse.until(() => sse.events().length === 1, 5_000);

  const nd = await fetch(`${url}/v1/topics/${topic}/stream?format=ndjson&from=earliest`);
  expect(nd.headers.get('content-type')).toContain('application/x-ndjson');
  const reader = nd.body!.getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain('"seq":1');
  await reader.cancel();

  // Heartbeats pass through: a comment within about a second of idle.
  const comments = sse.comments();
  await sse.until(() => sse.comments() > comments, 5_000);

  const ws = await WsClient.open(wsUrl(url));
  closers.push(() => ws.terminate());
  expect(ws.ws.protocol).toBe('rill.v1');
  ws.send({ op: 'subscribe', id: 1, topics: [topic], from: 'earliest' });
  ws.send({ op: 'publish', id: 'p', topic, data: { n: 2 } });
  await ws.until((m) => m.some((x) => x.op === 'event' && x.event?.seq === 2), 5_000, 'seq 2');
  expect(ws.messages.find((m) => m.op === 'ack')).toMatchObject({ seq: 2 });
  await sse.until(() => sse.events().length === 2, 5_000);
  return sse;
}
