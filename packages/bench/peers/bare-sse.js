// The bare reference for latency: node:http and nothing else, each published body written
// straight to every open subscriber response in the request's own tick (no framework, no log, no
// batching). What a fan-out server adds to an event's latency is measured against it, in the same
// run, with the same generator: `rill bench --target generic --sub-url http://127.0.0.1:8096/sub/{topic}
// --pub-url http://127.0.0.1:8096/pub/{topic}`.
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8096);
const MAX_BODY = 1024 * 1024;
const streams = new Map(); // topic -> Set<ServerResponse>

const server = createServer((req, res) => {
  const m = /^\/(sub|pub)\/([^/?]+)/.exec(req.url ?? '');
  if (m === null) {
    res.writeHead(404).end();
    return;
  }
  const topic = decodeURIComponent(m[2]);
  if (m[1] === 'sub' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    let set = streams.get(topic);
    if (!set) streams.set(topic, (set = new Set()));
    set.add(res);
    req.on('close', () => {
      set.delete(res);
      res.end();
    });
    return;
  }
  if (m[1] === 'pub' && req.method === 'POST') {
    const parts = [];
    let size = 0;
    req.on('data', (b) => {
      size += b.length;
      if (size > MAX_BODY) req.destroy();
      else parts.push(b);
    });
    req.on('end', () => {
      const frame = `data: ${Buffer.concat(parts).toString()}\n\n`;
      const set = streams.get(topic);
      if (set) for (const s of set) s.write(frame);
      res.writeHead(204).end();
    });
    return;
  }
  res.writeHead(405).end();
});
server.listen(port, '127.0.0.1', () => console.log(`bare-sse listening on ${port}`));
