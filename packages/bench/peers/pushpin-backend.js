// GRIP backend behind Pushpin (node:http only). Pushpin holds the subscriber connections; this
// process only tells it what to hold and relays publishes to its HTTP control API:
//   GET  /sub/<topic>   (proxied by Pushpin)  -> 200, Grip-Hold: stream, Grip-Channel: <topic>,
//                                                 text/event-stream: an SSE stream on <topic>;
//                       /sub/<a>,<b> holds one stream on both channels (many-topics scenario)
//   POST /sub/<topic>   (WebSocket-over-HTTP, route option over_http) -> accepts the OPEN and
//                       subscribes the connection to <topic> with a GRIP `c:subscribe` message
//   POST /pub/<topic>   (the publisher, directly) -> the raw body is published on <topic> as
//                       `data: <body>\n\n` for HTTP streams and as one text message for WebSockets;
//                       answers 204 once Pushpin's control API has accepted it.
//   GET  /ready         -> 200 (not held), so that a script can tell that the whole chain is up
//   PORT (default 8095), PUSHPIN_PUBLISH_URL (default http://127.0.0.1:8094/publish/)
import http from 'node:http';

const port = Number(process.env.PORT ?? 8095);
const publishUrl = process.env.PUSHPIN_PUBLISH_URL ?? 'http://127.0.0.1:8094/publish/';
// Publishes are relayed on kept-alive connections; the generator runs up to 64 at once.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const MAX_BODY = 1 << 20;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    req.on('data', (d) => {
      size += d.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
      } else parts.push(d);
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

function publish(channel, payload) {
  const body = JSON.stringify({
    items: [
      {
        channel,
        formats: {
          'http-stream': { content: `data: ${payload.replaceAll('\n', '\ndata: ')}\n\n` },
          'ws-message': { content: payload },
        },
      },
    ],
  });
  return new Promise((resolve, reject) => {
    const req = http.request(
      publishUrl,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error(`pushpin HTTP ${res.statusCode}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** WebSocket-over-HTTP events: `TYPE[ hexlen\r\ncontent]\r\n`; only the types matter here. */
function wsEventTypes(buf) {
  const types = [];
  let i = 0;
  while (i < buf.length) {
    const eol = buf.indexOf('\r\n', i);
    if (eol === -1) break;
    const [type, hexLen] = buf.toString('latin1', i, eol).split(' ');
    types.push(type);
    i = eol + 2 + (hexLen ? parseInt(hexLen, 16) + 2 : 0);
  }
  return types;
}

function wsEvent(type, content) {
  if (content === undefined) return `${type}\r\n`;
  return `${type} ${Buffer.byteLength(content).toString(16)}\r\n${content}\r\n`;
}

const server = http.createServer(async (req, res) => {
  // A plain (not held) answer: run.sh waits until it comes back through Pushpin.
  if (req.url === '/ready') return res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
  const m = /^\/(sub|pub)\/([^/?]+)$/.exec(req.url ?? '');
  if (!m) return res.writeHead(404).end();
  const topic = decodeURIComponent(m[2]);
  // Subscriptions may name several channels, comma-separated (GRIP takes a list).
  const channels = topic.split(',').filter((c) => c !== '');
  try {
    if (m[1] === 'sub' && req.method === 'GET') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
        'grip-hold': 'stream',
        'grip-channel': channels.join(', '),
      });
      return res.end();
    }
    if (m[1] === 'sub' && req.method === 'POST') {
      // WebSocket-over-HTTP: Pushpin posts the client's events (OPEN, TEXT, CLOSE, ...).
      const types = wsEventTypes(await readBody(req));
      let out = '';
      for (const t of types) {
        if (t === 'OPEN') {
          out += wsEvent('OPEN');
          for (const channel of channels) {
            out += wsEvent('TEXT', `c:${JSON.stringify({ type: 'subscribe', channel })}`);
          }
        } else if (t === 'CLOSE') out += wsEvent('CLOSE');
      }
      res.writeHead(200, {
        'content-type': 'application/websocket-events',
        'sec-websocket-extensions': 'grip',
      });
      return res.end(out);
    }
    if (m[1] === 'pub' && req.method === 'POST') {
      await publish(topic, (await readBody(req)).toString('utf8'));
      return res.writeHead(204).end();
    }
    res.writeHead(405).end();
  } catch (err) {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(String(err.message));
  }
});
server.keepAliveTimeout = 65_000;
// Pushpin opens one request to the backend per subscriber; a burst of 1,000 overflows Node's
// default listen backlog of 511 (Pushpin then answers 502).
server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () =>
  console.log(`pushpin backend listening on ${port}`),
);
