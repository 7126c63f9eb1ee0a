import { describe, expect, it } from 'vitest';
import type { RillEvent } from '../src/model/event.js';
import { eventJson } from '../src/model/event.js';
import { ndjsonEventLine } from '../src/wire/ndjson.js';
import { sseEventFrame } from '../src/wire/sse.js';
import { FRAME_END, wsEventFrame, wsEventPrefix } from '../src/wire/ws.js';

/**
 * An event that counts what framing does to it: every property read, and any attempt to store
 * something on it (which it refuses, as a frozen stored event would).
 */
function watched(ev: RillEvent): { ev: RillEvent; reads: () => number; writes: string[] } {
  let reads = 0;
  const writes: string[] = [];
  const proxy = new Proxy(ev, {
    get(target, key, receiver) {
      reads++;
      return Reflect.get(target, key, receiver) as unknown;
    },
    set(_target, key) {
      writes.push(String(key));
      return true;
    },
    defineProperty(_target, key) {
      writes.push(String(key));
      return true;
    },
  });
  return { ev: proxy, reads: () => reads, writes };
}

const make = (seq: number): RillEvent => ({
  topic: 'orders',
  seq,
  epoch: 'E1',
  time: 1_700_000_000_000 + seq,
  type: 'order.created',
  key: `k${seq}`,
  data: `{"n":${seq}}`,
});

const formats: Array<[string, (ev: RillEvent, id: string | null) => string]> = [
  ['SSE', sseEventFrame],
  ['NDJSON', ndjsonEventLine],
  ['WebSocket', (ev, id) => wsEventFrame(wsEventPrefix('s1'), ev, id)],
];

describe('frame caches', () => {
  it.each(formats)(
    '%s: builds an event frame once for a run of subscribers, storing nothing on the event',
    (_name, frame) => {
      const w = watched(make(1));
      const first = frame(w.ev, null);
      const multi = frame(w.ev, 'orders:E1:1,b:E2:4');
      const afterFirst = w.reads();
      for (let i = 0; i < 100; i++) {
        expect(frame(w.ev, null)).toBe(first);
        expect(frame(w.ev, 'orders:E1:1,b:E2:4')).toBe(multi);
      }
      // Every subscriber after the first got the frame without the event being looked at.
      expect(w.reads()).toBe(afterFirst);
      expect(w.writes).toEqual([]);
      // The event JSON, less its opening brace (NDJSON puts the cursor first).
      expect(first).toContain(eventJson(make(1)).slice(1));
    },
  );

  it.each(formats)('%s: the next event replaces the cached frame', (_name, frame) => {
    const a = make(2);
    const b = make(3);
    const fa = frame(a, null);
    const fb = frame(b, null);
    expect(fb).not.toBe(fa);
    expect(fb).toContain(eventJson(b).slice(1));
    expect(frame(a, null)).toBe(fa);
  });

  it('WebSocket: a frame is per subscription id', () => {
    const ev = make(4);
    const s1 = wsEventFrame(wsEventPrefix('s1'), ev, null);
    const s2 = wsEventFrame(wsEventPrefix('s2'), ev, null);
    expect(JSON.parse(s1.slice(0, -1))).toMatchObject({ op: 'event', sub: 's1' });
    expect(JSON.parse(s2.slice(0, -1))).toMatchObject({ op: 'event', sub: 's2' });
    expect(s2.endsWith(FRAME_END)).toBe(true);
  });
});
