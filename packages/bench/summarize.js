// Prints the Markdown tables of docs/benchmarks.md from a results folder: the one `run.sh`
// writes (packages/bench/results by default, with fanout/, idle/, ... in it), or a folder of such
// folders (packages/bench/results holds one per round: round1/ ... round5/), each printed under
// its name.
//   node packages/bench/summarize.js [results-dir]
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const SCENARIOS = ['fanout', 'idle', 'ingest', 'catchup', 'storm', 'manytopics'];
const hasResults = (d) => SCENARIOS.some((s) => existsSync(join(d, s)));

const k = (n) =>
  n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : `${n}`;
const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : '–');
/** The tables of one results folder, as lines. */
function summarize(dir) {
  const load = (sub, name) => {
    const p = join(dir, sub, name);
    return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : null;
  };
  const out = [];

  const families = {
    sse: ['rill-sse', 'nchan-sse', 'pushpin-sse', 'express-sse'],
    ws: ['rill-ws', 'nchan-ws', 'pushpin-ws', 'socketio'],
  };
  for (const n of [1000, 10000]) {
    for (const [fam, targets] of Object.entries(families)) {
      const rows = targets.map((t) => ({
        t,
        r: load('fanout', `${t}-${n}.json`),
        q: load('fanout', `${t}-${n}-quartiles.json`),
      }));
      if (!rows.some((x) => x.r)) continue;
      const rill = rows[0].r?.best?.deliveredPerSec;
      const rillCap = rows[0].r?.capacity?.deliveredPerSec;
      out.push(`\n#### Fan-out, ${n} ${fam.toUpperCase()} subscribers, 1 topic\n`);
      out.push(
        '| target | passing (p99 < 100 ms) deliveries/s | zero-loss capacity deliveries/s (p99 there) | p50 / p99 at 25 % | at 50 % | at 75 % | server µs CPU / delivery | Rill ÷ target, passing | Rill ÷ target, capacity |',
      );
      out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const { t, r, q } of rows) {
        if (!r) continue;
        const best = r.best;
        const cap = r.capacity;
        const capStep = r.steps.find((s) => s.sound && s.rate === cap?.rate);
        const qs = (q?.steps ?? []).map(
          (s) => `${s.latencyMs.p50} / ${s.latencyMs.p99} ms${s.loss ? ` (loss ${s.loss})` : ''}`,
        );
        const rillRow = t.startsWith('rill');
        out.push(
          `| ${t} | ${best ? `${k(best.deliveredPerSec)} (p99 ${best.p99} ms)` : 'none'} | ${cap ? `${k(cap.deliveredPerSec)} (${cap.p99} ms)` : 'none'} | ${qs[0] ?? '–'} | ${qs[1] ?? '–'} | ${qs[2] ?? '–'} | ${capStep?.serverCpuMicrosPerDelivery ?? '–'} | ${rillRow ? '1' : ratio(rill, best?.deliveredPerSec)} | ${rillRow ? '1' : ratio(rillCap, cap?.deliveredPerSec)} |`,
        );
      }
    }
  }

  const idle = existsSync(join(dir, 'idle'))
    ? readdirSync(join(dir, 'idle'), { withFileTypes: true }).filter((d) =>
        d.name.endsWith('.json'),
      )
    : [];
  if (idle.length) {
    out.push('\n#### Idle connections: server RSS per connection\n');
    out.push(
      '| target | connections | RSS before | RSS with all open | KiB per connection | Rill ÷ target (lower is better) |',
    );
    out.push('| --- | --- | --- | --- | --- | --- |');
    const rs = Object.fromEntries(
      idle.map((d) => [d.name.replace(/-\d+\.json$/, ''), load('idle', d.name)]),
    );
    for (const [t, r] of Object.entries(rs)) {
      const s = r.server;
      const rill = (t.endsWith('ws') || t === 'socketio' ? rs['rill-ws'] : rs['rill-sse'])?.server
        ?.rssPerConnectionKiB;
      out.push(
        `| ${t} | ${r.connected}/${r.subscribers} | ${(s.rssBeforeKiB / 1024).toFixed(1)} MiB | ${(s.rssConnectedKiB / 1024).toFixed(1)} MiB | ${s.rssPerConnectionKiB} | ${t.startsWith('rill') ? '1' : ratio(rill, s.rssPerConnectionKiB)} |`,
      );
    }
  }

  const ing = existsSync(join(dir, 'ingest'))
    ? readdirSync(join(dir, 'ingest')).filter((f) => f.endsWith('.json'))
    : [];
  if (ing.length) {
    out.push('\n#### Ingest (no subscribers)\n');
    out.push('| target | mode | requests/s | events/s | errors | server CPU % |');
    out.push('| --- | --- | --- | --- | --- | --- |');
    for (const f of ing.sort()) {
      const r = load('ingest', f);
      const s = r.steps[0];
      if (!s) continue;
      const perReq = r.publish === 'batch' ? Number(f.match(/batch(\d+)/)?.[1] ?? 1) : 1;
      out.push(
        `| ${f.replace(/\.json$/, '')} | ${r.publish} | ${k(Math.round(s.publishedPerSec / perReq))} | ${k(s.publishedPerSec)} | ${s.publishErrors} | ${s.serverCpuPercent ?? '–'} |`,
      );
    }
  }
  const catchup = load('catchup', 'rill.json');
  if (catchup) {
    out.push('\n#### Catch-up (Rill, lmdb)\n');
    out.push(
      '| events | ingest (NDJSON batches of 1,000) | first replay to one SSE subscriber | second replay (warm) |',
    );
    out.push('| --- | --- | --- | --- |');
    const second =
      catchup.secondReplayEventsPerSec === undefined
        ? '–'
        : `${k(catchup.secondReplayEventsPerSec)} events/s (${catchup.secondReplaySeconds} s)`;
    out.push(
      `| ${k(catchup.events)} | ${k(catchup.ingestEventsPerSec)} events/s | ${k(catchup.replayEventsPerSec)} events/s (${catchup.replaySeconds} s) | ${second} |`,
    );
  }

  const storm = existsSync(join(dir, 'storm')) ? readdirSync(join(dir, 'storm')) : [];
  if (storm.length) {
    out.push('\n#### Reconnect storm: 5,000 SSE subscribers, 500-event gap\n');
    out.push(
      '| target | reconnect burst | full recovery | recovered | reconnect attempts reset | gaps | duplicates |',
    );
    out.push('| --- | --- | --- | --- | --- | --- | --- |');
    for (const f of storm.sort()) {
      const r = load('storm', f);
      out.push(
        `| ${f.replace(/\.json$/, '')} | ${r.reconnectSeconds} s | ${r.recoverySeconds === null ? 'never' : `${r.recoverySeconds} s`} | ${r.recovered}/${r.subscribers} | ${r.failedReconnects} | ${r.gaps} | ${r.duplicates} |`,
      );
    }
  }
  const many = existsSync(join(dir, 'manytopics'))
    ? readdirSync(join(dir, 'manytopics')).filter((f) => f.endsWith('.json'))
    : [];
  if (many.length) {
    const rs = Object.fromEntries(
      many.map((f) => [f.replace(/\.json$/, ''), load('manytopics', f)]),
    );
    const any = Object.values(rs)[0];
    out.push(
      `\n#### Many topics: ${any.subscribers} subscribers, each on its own topic + 1 shared topic (${any.sharedRate} events/s)\n`,
    );
    out.push(
      'Row per target at the highest offered rate it ran; "highest sound" is the step with the most deliveries/s at zero loss with the offered rate kept.\n',
    );
    out.push(
      '| target | publish | offered/s (own + shared) | published/s | deliveries/s | loss | p50 / p99 | server µs CPU / delivery | server CPU % | highest sound step | Rill ÷ target, deliveries/s | target ÷ Rill, µs CPU / delivery |',
    );
    out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    const top = (r) => r?.steps.reduce((a, s) => (!a || s.rate >= a.rate ? s : a), undefined);
    for (const [t, r] of Object.entries(rs).sort()) {
      const s = top(r);
      if (!s) continue;
      // Peers are compared with the Rill run of the same family, publishing over HTTP like them.
      const rill = top(rs[t.endsWith('-ws') || t.startsWith('socketio') ? 'rill-ws' : 'rill-sse']);
      const isRill = t.startsWith('rill');
      const cap = r.capacity;
      out.push(
        `| ${t} | ${r.publish} × ${r.publishers} | ${k(s.rate)} + ${r.sharedRate} | ${k(s.publishedPerSec)} | ${k(s.deliveredPerSec)} | ${s.loss} | ${s.latencyMs.p50} / ${s.latencyMs.p99} ms | ${s.serverCpuMicrosPerDelivery ?? '–'} | ${s.serverCpuPercent ?? '–'} | ${cap ? `${k(cap.deliveredPerSec)} at ${k(cap.rate)}/s (p99 ${cap.p99} ms)` : 'none'} | ${isRill ? '–' : ratio(rill?.deliveredPerSec, s.deliveredPerSec)} | ${isRill ? '–' : ratio(s.serverCpuMicrosPerDelivery, rill?.serverCpuMicrosPerDelivery)} |`,
      );
    }
  }
  return out;
}

const root = process.argv[2] ?? new URL('./results', import.meta.url).pathname;
if (hasResults(root)) {
  console.log(summarize(root).join('\n'));
} else {
  const rounds = existsSync(root)
    ? readdirSync(root, { withFileTypes: true })
        .filter((d) => d.isDirectory() && hasResults(join(root, d.name)))
        .map((d) => d.name)
        .sort()
    : [];
  if (rounds.length === 0) {
    console.error(
      `no results in ${root}: expected ${SCENARIOS.join('/, ')}/ there, or folders holding them`,
    );
    process.exit(1);
  }
  for (const r of rounds) console.log(`\n### ${r}\n${summarize(join(root, r)).join('\n')}`);
}
