// The seed's random-number stream, rendered live with the SSE-only SDK (the smallest build).
import { createClient } from '@rill/client/sse';

const root = document.getElementById('root')!;
root.innerHTML = `<h1>Random numbers</h1>
<p class="status">status: <span id="status">connecting</span> · received <span id="count">0</span></p>
<div class="big" id="value">–</div>
<svg id="spark" width="600" height="100" viewBox="0 0 600 100" style="width:100%;height:100px">
  <polyline id="line" fill="none" stroke="#1565c0" stroke-width="2" points=""/></svg>`;
const $ = (id: string): HTMLElement => document.getElementById(id)!;

const values: number[] = [];
const rill = createClient();
rill.subscribe<number>('demo.random', {
  onState: (s) => ($('status').textContent = s.state),
  onEvent: (ev) => {
    values.push(ev.data);
    if (values.length > 60) values.shift();
    $('value').textContent = String(ev.data);
    $('count').textContent = String(Number($('count').textContent) + 1);
    $('line').setAttribute('points', values.map((v, i) => `${i * 10},${100 - v}`).join(' '));
  },
});
