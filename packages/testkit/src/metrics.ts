import { spawn } from 'node:child_process';
import { systemBinary } from './helpers.js';

/** One sample of the Prometheus text format: its name, labels and value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (what `/metrics` answers). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      }
    }
    out.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

/** The sum of the samples named `name` whose labels include `labels`; 0 when none matches. */
export function metric(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number {
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/** Fetches and parses `<url>/metrics` (with `headers`); fails on a non-200 answer. */
export async function scrape(url: string, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await fetch(url.endsWith('/metrics') ? url : `${url}/metrics`, { headers });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${text}`);
  return parseMetrics(text);
}

/**
 * Runs `promtool check metrics` (Debian's `prometheus` package) on `text`: resolves with its
 * output and exit code. Throws when promtool is not installed, so a test needing it fails.
 */
export function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const bin = systemBinary('promtool');
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d: Buffer) => (output += d.toString()));
    p.stderr.on('data', (d: Buffer) => (output += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, output }));
    p.stdin.end(text);
  });
}
