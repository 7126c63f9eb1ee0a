/**
 * The page served at `/demo` with `--demo`: the demo topic rendered live with the browser's native
 * EventSource, an example of the smallest client. The dashboard lives at `/ui/`.
 */
export const demoPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Rill</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; color: #222; }
  #value { font-size: 5rem; font-variant-numeric: tabular-nums; }
  #log { font: 13px ui-monospace, monospace; color: #555; white-space: pre; }
  .status { color: #888; }
</style>
</head>
<body>
<h1>Rill</h1>
<p>Live from <code>demo.random</code> over Server-Sent Events
(start the server with <code>--demo</code> to feed it). <span class="status" id="status">connecting…</span></p>
<p>The server itself: <a href="/ui/">the dashboard</a>.</p>
<div id="value">–</div>
<div id="log"></div>
<script>
  const status = document.getElementById('status');
  const value = document.getElementById('value');
  const log = document.getElementById('log');
  const lines = [];
  const es = new EventSource('/v1/topics/demo.random/stream');
  es.onopen = () => { status.textContent = 'live'; };
  es.onerror = () => { status.textContent = 'reconnecting…'; };
  es.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    value.textContent = String(ev.data);
    lines.unshift('#' + ev.seq + '  ' + new Date(ev.time).toISOString() + '  ' + JSON.stringify(ev.data));
    lines.length = Math.min(lines.length, 10);
    log.textContent = lines.join('\\n');
  };
</script>
</body>
</html>
`;
