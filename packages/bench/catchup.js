// Catch-up: one subscriber replays N stored events (default 1,000,000) from a Rill server.
//   node packages/bench/catchup.js [url] [events] [server pid]
// Publishes N events in NDJSON batches of 1,000 to a fresh topic, then opens one SSE stream with
// from=earliest and times how long the stream takes to deliver them all (events counted with the
// generator's marker scanner, the same as `rill bench`), twice: the first replay on a cold
// server, the second once its replay path is warm. With the server's pid, the server CPU time of
// each replay is read from /proc as well: CPU per event is steadier than events/s on a busy machine. The peers keep no such history (Nchan's
// buffer here holds 1,000 messages; Socket.IO and the Express route none), so this is Rill alone.
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { MarkerScanner, benchPayload, paddingFor } from './dist/scan.js';
import { sampleProcs } from './dist/proc.js';

const url = new URL(process.argv[2] ?? 'http://127.0.0.1:8080');
const total = Number(process.argv[3] ?? 1_000_000);
const serverPid = process.argv[4] === undefined ? null : Number(process.argv[4]);
/** The server's CPU seconds so far, or null without a pid. */
const serverCpu = () =>
  serverPid === null ? null : (sampleProcs([serverPid])?.cpuSeconds ?? null);
const topic = `catchup-${Date.now()}`;
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const padding = paddingFor(100);

function post(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      new URL(`/v1/topics/${topic}/events`, url),
      { method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson' } },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 201 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const t0 = performance.now();
let n = 0;
const inflight = new Set();
while (n < total) {
  let body = '';
  for (let i = 0; i < 1000 && n < total; i++) body += `{"data":${benchPayload(++n, padding)}}\n`;
  const p = post(body).finally(() => inflight.delete(p));
  inflight.add(p);
  if (inflight.size >= 4) await Promise.race(inflight);
}
await Promise.all(inflight);
const ingestS = (performance.now() - t0) / 1000;
agent.destroy();

/** One subscriber replays the whole topic; resolves with the seconds it took. */
async function replay() {
  const scanner = new MarkerScanner(1_000_000_000, () => undefined);
  const cpu0 = serverCpu();
  const t1 = performance.now();
  await new Promise((resolve, reject) => {
    const sock = net.connect(Number(url.port || 80), url.hostname, () => {
      sock.write(
        `GET /v1/topics/${topic}/stream?from=earliest HTTP/1.1\r\nHost: ${url.host}\r\nAccept: text/event-stream\r\n\r\n`,
      );
    });
    let seen = -1;
    const stall = setInterval(() => {
      if (scanner.count === seen) {
        sock.destroy();
        reject(new Error(`stalled at ${scanner.count} of ${total} events (retention too small?)`));
      }
      seen = scanner.count;
    }, 10_000);
    sock.on('close', () => clearInterval(stall));
    sock.on('data', (chunk) => {
      scanner.push(chunk);
      if (scanner.count >= total) {
        sock.destroy();
        resolve();
      }
    });
    sock.on('error', reject);
    sock.on('close', () =>
      scanner.count >= total ? resolve() : reject(new Error(`closed at ${scanner.count}`)),
    );
  });
  const seconds = (performance.now() - t1) / 1000;
  const cpu1 = serverCpu();
  const cpuSeconds = cpu0 === null || cpu1 === null ? null : cpu1 - cpu0;
  return { seconds, received: scanner.count, cpuSeconds };
}

// The first replay runs right after the ingest, on a server whose replay path has never run
// (code not yet optimized by V8); the second is the steady state. Both are reported.
const first = await replay();
const second = await replay();
const result = {
  events: total,
  ingestSeconds: +ingestS.toFixed(2),
  ingestEventsPerSec: Math.round(total / ingestS),
  replaySeconds: +first.seconds.toFixed(2),
  replayEventsPerSec: Math.round(total / first.seconds),
  secondReplaySeconds: +second.seconds.toFixed(2),
  secondReplayEventsPerSec: Math.round(total / second.seconds),
  received: Math.min(first.received, second.received),
};
if (serverPid !== null) {
  // Server CPU µs per replayed event (user + system, /proc ticks of 10 ms).
  result.replayServerCpuMicrosPerEvent = +((first.cpuSeconds * 1e6) / total).toFixed(3);
  result.secondReplayServerCpuMicrosPerEvent = +((second.cpuSeconds * 1e6) / total).toFixed(3);
}
console.log(JSON.stringify(result));
