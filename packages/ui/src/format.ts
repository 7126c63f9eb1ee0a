/** Number and time formats shared by the views. */

const compact = new Intl.NumberFormat('en', { maximumFractionDigits: 1, notation: 'compact' });
const plain = new Intl.NumberFormat('en', { maximumFractionDigits: 2 });

export function num(n: number | null | undefined): string {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Math.abs(n) >= 10_000 ? compact.format(n) : plain.format(n);
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function ms(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n >= 10 ? n.toFixed(0) : n.toFixed(1)} ms`;
}

export function duration(seconds: number): string {
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** `12:03:04` today, else the date too. */
export function time(t: number | string | null | undefined): string {
  if (t === null || t === undefined || t === 0) return '–';
  const d = new Date(t);
  const today = new Date().toDateString() === d.toDateString();
  return today
    ? d.toLocaleTimeString('en-GB')
    : `${d.toISOString().slice(0, 10)} ${d.toLocaleTimeString('en-GB')}`;
}

/** How long ago, short: `4s ago`. */
export function ago(t: number | null | undefined, now = Date.now()): string {
  if (!t) return '–';
  return `${duration(Math.max(0, (now - t) / 1000))} ago`;
}
