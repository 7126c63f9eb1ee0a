import type { RemoteChange, StoredEntry } from './store.js';

export interface StoreLog {
  warn(obj: object, msg: string): void;
}

/** An entry as the shared stores keep it: `{"c":conns,"s":since,"i":info}`. */
export function encodeEntry(e: StoredEntry): string {
  return JSON.stringify(
    e.info ? { c: e.conns, s: e.since, i: e.info } : { c: e.conns, s: e.since },
  );
}

/** A stored entry, or null when it is not one (written by something else). */
export function decodeEntry(text: string): StoredEntry | null {
  try {
    const v = JSON.parse(text) as { c?: unknown; s?: unknown; i?: unknown };
    if (typeof v.c !== 'number' || typeof v.s !== 'number') return null;
    const info =
      v.i !== null && typeof v.i === 'object' && !Array.isArray(v.i)
        ? (v.i as Record<string, unknown>)
        : undefined;
    return { conns: v.c, since: v.s, ...(info ? { info } : {}) };
  } catch {
    return null;
  }
}

/** Longest wait for each step of closing a shared store. */
export const CLOSE_WAIT_MS = 500;

/** Waits for `p` at most `ms`; its failure is ignored. */
export function within(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    p.then(
      () => {
        clearTimeout(t);
        resolve();
      },
      () => {
        clearTimeout(t);
        resolve();
      },
    );
  });
}

/** A change as the nodes announce it: `{"n":node,"t":topic,"s":sub,"e":entry JSON or null}`. */
export function encodeChange(
  node: string,
  topic: string,
  sub?: string,
  e?: StoredEntry | null,
): string {
  return JSON.stringify(
    sub === undefined
      ? { n: node, t: topic }
      : { n: node, t: topic, s: sub, e: e ? encodeEntry(e) : null },
  );
}

/** An announced change, or null when the message is not one. */
export function decodeChange(text: string): RemoteChange | null {
  try {
    const m = JSON.parse(text) as { n?: unknown; t?: unknown; s?: unknown; e?: unknown };
    if (typeof m.n !== 'string' || typeof m.t !== 'string') return null;
    if (m.s === undefined) return { node: m.n, topic: m.t };
    if (typeof m.s !== 'string') return null;
    if (m.e === null) return { node: m.n, topic: m.t, sub: m.s, entry: null };
    const entry = typeof m.e === 'string' ? decodeEntry(m.e) : null;
    return entry ? { node: m.n, topic: m.t, sub: m.s, entry } : null;
  } catch {
    return null;
  }
}
