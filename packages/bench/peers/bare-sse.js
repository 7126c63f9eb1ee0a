// The bare reference for latency: node:http and nothing else, each published body written
// straight to every open subscriber response in the request's own tick (no framework, no log, no
// batching). What a fan-out server adds to an event's latency is measured against it, in the same
// run, with the same generator: `rill bench --target generic --sub-url http://127.0.0.1:8096/sub/{topic}
// --pub-url http://127.0.0.1:8096/pub/{topic}`.
// For idle-connection runs (`rill bench storm --target generic`): HEARTBEAT_MS=n writes an SSE
// comment to every open stream every n ms (one shared timer), and WORKERS=n serves from n
// processes sharing the port (node:cluster, as `rill serve --workers`). With several workers a
// publish reaches only the subscribers of the worker that received it: an idle reference only.
import cluster from 'node:cluster';
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8096);
const workers = Number(process.env.WORKERS ?? 1);
const heartbeatMs = Number(process.env.HEARTBEAT_MS ?? 0);
if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let up = 0;
  cluster.on('listening', () => {
    if (++up === workers) console.log(`bare-sse listening on ${port} (${workers} workers)`);
  });
  cluster.on('exit', () => process.exit(1));
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    process.exit(0);
  });
} else serve();

function serve() {
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
  if (heartbeatMs > 0) {
    setInterval(() => {
      for (const set of streams.values()) for (const s of set) s.write(':\n\n');
    }, heartbeatMs);
  }
  server.listen(port, '127.0.0.1', () => {
    if (workers <= 1) console.log(`bare-sse listening on ${port}`);
  });
}
