import type { StoredEntry } from './store.js';

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
