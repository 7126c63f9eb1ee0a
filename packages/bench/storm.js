// Reconnect storm: N SSE subscribers (default 5,000) on one topic are dropped at once, G events
// (default 500) are published while they are away, and all reconnect at once with Last-Event-ID.
//   node packages/bench/storm.js <rill|nchan|pushpin|express|URL-templates> [subscribers] [gap]
// Reports the time from the reconnect burst until every subscriber has every event (the gap plus
// one event published after the reconnect), and the gaps and duplicates seen (from the payload's publish counter `n`, so any peer can be checked).
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { benchPayload } from './dist/scan.js';

const targets = {
  rill: {
    sub: (t) => `http://127.0.0.1:8080/v1/topics/${t}/stream`,
    pub: (t) => `http://127.0.0.1:8080/v1/topics/${t}/events`,
    wrap: (p) => `{"data":${p}}`,
  },
  nchan: {
    sub: (t) => `http://127.0.0.1:8090/sub/${t}`,
    pub: (t) => `http://127.0.0.1:8090/pub/${t}`,
    wrap: (p) => p,
  },
  // Pushpin holds the streams; the GRIP backend (peers/pushpin-backend.js) publishes. No
  // resume: the backend sends no ids and keeps no history, so the gap is lost like Express's.
  pushpin: {
    sub: (t) => `http://127.0.0.1:${process.env.PUSHPIN_PORT ?? 8093}/sub/${t}`,
    pub: (t) => `http://127.0.0.1:${process.env.PUSHPIN_BACKEND_PORT ?? 8095}/pub/${t}`,
    wrap: (p) => p,
    // Each new stream is a request through Pushpin's proxy and zurl to the backend; 200 at once
    // overflow its queue to zurl (502), see run.sh.
    openConcurrency: 50,
  },
  express: {
    sub: (t) => `http://127.0.0.1:8091/sub/${t}`,
    pub: (t) => `http://127.0.0.1:8091/pub/${t}`,
    wrap: (p) => p,
  },
};
const name = process.argv[2] ?? 'rill';
const target = targets[name];
// BASE=http://host:port points a target at another address than its run.sh default.
if (process.env.BASE) {
  for (const k of ['sub', 'pub']) {
    const f = target[k];
    target[k] = (t) => f(t).replace(/^http:\/\/[^/]+/, process.env.BASE);
  }
}
const subs = Number(process.argv[3] ?? 5000);
const gap = Number(process.argv[4] ?? 500);
const topic = `storm-${Date.now()}`;
const WARM = 10;
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
let n = 0;

function publish() {
  const body = target.wrap(benchPayload(++n, ''));
  return new Promise((resolve, reject) => {
    const req = http.request(
      target.pub(topic),
      { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode < 300 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** One subscriber: its last SSE id and publish counter, gaps and duplicates. */
class Sub {
  lastId = null;
  lastN = 0;
  gaps = 0;
  dups = 0;
  req = null;
  buf = '';
  open() {
    return new Promise((resolve, reject) => {
      const headers = { accept: 'text/event-stream' };
      if (this.lastId !== null) headers['last-event-id'] = this.lastId;
      this.req = http.get(target.sub(topic), { headers, agent: false }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}`));
        res.setEncoding('utf8');
        res.on('data', (d) => this.feed(d));
        res.on('error', () => undefined);
        resolve();
      });
      this.req.on('error', (e) => (this.dropping ? undefined : reject(e)));
    });
  }
  feed(d) {
    this.buf += d;
    let end;
    while ((end = this.buf.indexOf('\n\n')) !== -1) {
      const frame = this.buf.slice(0, end);
      this.buf = this.buf.slice(end + 2);
      const at = frame.indexOf('"n":');
      if (at === -1) continue;
      const idAt = frame.startsWith('id: ') ? 0 : frame.indexOf('\nid: ') + 1;
      if (idAt >= 0 && frame.startsWith('id: ', idAt)) {
        this.lastId = frame.slice(idAt + 4, frame.indexOf('\n', idAt));
      }
      const v = parseInt(frame.slice(at + 4), 10);
      if (v <= this.lastN) this.dups++;
      else {
        this.gaps += v - this.lastN - 1;
        this.lastN = v;
      }
    }
  }
  drop() {
    this.dropping = true;
    this.req.destroy();
    this.buf = '';
  }
}

async function all(list, f, concurrency) {
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (i < list.length) await f(list[i++]);
    }),
  );
}
const until = async (pred, ms) => {
  const t = performance.now();
  while (!pred()) {
    if (performance.now() - t > ms) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
};

const list = Array.from({ length: subs }, () => new Sub());
await all(list, (s) => s.open(), target.openConcurrency ?? 200);
for (let i = 0; i < WARM; i++) await publish();
if (!(await until(() => list.every((s) => s.lastN === WARM), 30_000)))
  throw new Error('warm-up events did not arrive');
for (const s of list) s.drop();
// One at a time: concurrent publishes could be stored in another order than their counters,
// which would read as gaps and duplicates that are not there.
for (let i = 0; i < gap; i++) await publish();
for (const s of list) s.dropping = false;
const t0 = performance.now();
// Like a real client: a failed reconnect is retried after a short jittered backoff.
let failedReconnects = 0;
let firstError;
const reconnect = async (s) => {
  for (let attempt = 0; ; attempt++) {
    try {
      return await s.open();
    } catch (err) {
      failedReconnects++;
      firstError ??= err.message;
      if (attempt === 20) return;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 400 * (attempt + 1)));
    }
  }
};
await all(list, reconnect, 1000);
const reconnected = performance.now() - t0;
// One more event after the reconnect: a subscriber that did not get the gap (no resume) then
// sees it as a gap, instead of just waiting. Recovered = has every event, final included.
await publish();
const total = WARM + gap + 1;
const whole = (s) => s.lastN >= total && s.gaps === 0;
await until(() => list.every((s) => s.lastN >= total), 60_000);
const ok = list.every(whole);
const recovered = performance.now() - t0;
const out = {
  target: name,
  subscribers: subs,
  gap,
  reconnectSeconds: +(reconnected / 1000).toFixed(2),
  recoverySeconds: ok ? +(recovered / 1000).toFixed(2) : null,
  recovered: list.filter(whole).length,
  failedReconnects,
  ...(firstError ? { firstError } : {}),
  gaps: list.reduce((a, s) => a + s.gaps, 0),
  duplicates: list.reduce((a, s) => a + s.dups, 0),
};
console.log(JSON.stringify(out));
for (const s of list) s.drop();
agent.destroy();
process.exit(0);
