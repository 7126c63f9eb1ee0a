// The bare reference for catch-up: node:http and nothing else. It keeps the events POSTed to
// /v1/topics/{topic}/events (NDJSON, one `{"data":…}` per line) in memory as ready SSE frames, and
// a GET of /v1/topics/{topic}/stream writes them all, in pages of 1,000 frames joined once and
// kept, as fast as the socket takes them. No store, no framing per read: what is left is the
// socket and the client. `node packages/bench/catchup.js URL N` runs against it unchanged, so its
// figure in the same run is the ceiling the client and loopback allow, and Rill's is read as a
// ratio of it.
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8097);
const MAX_BODY = 16 * 1024 * 1024;
const PAGE = 1000;
const topics = new Map(); // topic -> { pages: string[], open: string[], seq: number }

function topicOf(name) {
  let t = topics.get(name);
  if (!t) topics.set(name, (t = { pages: [], open: [], seq: 0 }));
  return t;
}

const server = createServer((req, res) => {
  const m = /^\/v1\/topics\/([^/?]+)\/(events|stream)/.exec(req.url ?? '');
  if (m === null) {
    res.writeHead(req.url === '/readyz' ? 200 : 404).end();
    return;
  }
  const t = topicOf(decodeURIComponent(m[1]));
  if (m[2] === 'events' && req.method === 'POST') {
    const parts = [];
    let size = 0;
    req.on('data', (b) => {
      size += b.length;
      if (size > MAX_BODY) req.destroy();
      else parts.push(b);
    });
    req.on('end', () => {
      for (const line of Buffer.concat(parts).toString('utf8').split('\n')) {
        if (line === '') continue;
        const data = JSON.stringify(JSON.parse(line).data);
        t.open.push(`id: ${++t.seq}\ndata: ${data}\n\n`);
        if (t.open.length === PAGE) t.pages.push(t.open.splice(0).join(''));
      }
      res.writeHead(201, { 'content-type': 'application/json' }).end('{}');
    });
    return;
  }
  if (m[2] === 'stream' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const pages = [...t.pages, t.open.join('')];
    let i = 0;
    const pump = () => {
      while (i < pages.length) if (!res.write(pages[i++])) return void res.once('drain', pump);
    };
    pump();
    return;
  }
  res.writeHead(405).end();
});
server.listen(port, '127.0.0.1');
