// Socket.IO peer: each client joins the rooms named by its `topic` handshake query (one, or several
// comma-separated); a POST to /pub/:topic emits the parsed body to that room. Production settings
// from the Socket.IO docs: WebSocket transport only, no per-message deflate, no HTTP long-polling
// fallback.
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 8092);
const server = http.createServer((req, res) => {
  const m = /^\/pub\/([^/?]+)$/.exec(req.url ?? '');
  if (req.method !== 'POST' || !m) {
    res.writeHead(404).end();
    return;
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    io.to(decodeURIComponent(m[1])).emit('m', JSON.parse(body));
    res.writeHead(204).end();
  });
});
const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
});
io.on('connection', (socket) => {
  const topic = socket.handshake.query.topic;
  if (typeof topic === 'string') void socket.join(topic.split(','));
});
server.listen(port, '127.0.0.1', () => console.log(`socket.io listening on ${port}`));
