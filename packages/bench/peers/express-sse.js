// The plain Express SSE route most tutorials show (shared/seeds/000_0e0acab4c94c9bb6.txt), with a
// POST that writes each published body to every open response in a naive loop. Two changes, both
// needed for any publisher at all: the random-number interval is gone, and flushHeaders() sends
// the headers at once so a subscriber knows it is connected before the first event.
import express from 'express';

const port = Number(process.env.PORT ?? 8091);
const app = express();
const streams = new Map(); // topic -> Set<res>

app.get('/sub/:topic', (req, res) => {
  res.setHeader('Content-Type', 'text/event-stream');
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('Connection', 'keep-alive');
  res.flushHeaders();
  // Several topics, comma-separated, on one stream (the many-topics scenario).
  const sets = req.params.topic.split(',').map((topic) => {
    let set = streams.get(topic);
    if (!set) streams.set(topic, (set = new Set()));
    set.add(res);
    return set;
  });
  req.on('close', () => {
    for (const set of sets) set.delete(res);
    res.end();
  });
});

app.post('/pub/:topic', express.text({ type: '*/*', limit: '1mb' }), (req, res) => {
  const set = streams.get(req.params.topic);
  if (set) for (const s of set) s.write(`data: ${req.body}\n\n`);
  res.status(204).end();
});

app.listen(port, '127.0.0.1', () => console.log(`express-sse listening on ${port}`));
