// A live stock ticker: one pattern subscription (`prices.*`) through the React hook.
import { StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { RillProvider, useStream } from '@rill/react';

interface Tick {
  symbol: string;
  price: number;
}

function Ticker() {
  const [rows, setRows] = useState(new Map<string, { price: number; prev: number; seq: number }>());
  const { status } = useStream<Tick>('prices.*', {
    maxEvents: 1,
    onEvent: (ev) =>
      setRows((m) => {
        const next = new Map(m);
        const old = m.get(ev.data.symbol);
        next.set(ev.data.symbol, {
          price: ev.data.price,
          prev: old?.price ?? ev.data.price,
          seq: ev.seq,
        });
        return next;
      }),
  });
  const sorted = [...rows.entries()].sort(([a], [b]) => a.localeCompare(b));
  return (
    <>
      <h1>Live ticker</h1>
      <p className="status">
        status: <span id="status">{status}</span>
      </p>
      <table>
        <thead>
          <tr>
            <th>Symbol</th>
            <th>Price</th>
            <th>Change</th>
            <th>Ticks</th>
          </tr>
        </thead>
        <tbody>
          {sorted.map(([sym, r]) => {
            const d = r.price - r.prev;
            return (
              <tr key={sym} data-symbol={sym}>
                <td>{sym}</td>
                <td className={d > 0 ? 'up price' : d < 0 ? 'down price' : 'price'}>
                  {r.price.toFixed(2)}
                </td>
                <td className={d > 0 ? 'up' : d < 0 ? 'down' : ''}>
                  {d > 0 ? '▲' : d < 0 ? '▼' : '·'} {Math.abs(d).toFixed(2)}
                </td>
                <td className="ticks">{r.seq}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <RillProvider>
      <Ticker />
    </RillProvider>
  </StrictMode>,
);
