/**
 * Counting events in a byte stream without parsing it.
 *
 * Every payload the bench publishes is a JSON object that starts with `"rb":<µs timestamp>`. The
 * generator finds that marker with `Buffer.indexOf` in whatever arrives (SSE frames, NDJSON lines,
 * WebSocket messages, Socket.IO packets, any peer's framing) and counts one event per marker. Only
 * every `sample`-th event has its digits read for the latency histogram. Hand-written because this
 * is the generator's hot path: a `JSON.parse` per delivery would cost more than the server it
 * measures.
 */

/** The key that opens every bench payload; it must appear once per event on the wire. */
export const MARKER = '"rb":';
const MARKER_BUF = Buffer.from(MARKER);
const ZERO = 0x30;
const NINE = 0x39;

/** The current wall-clock time in microseconds, comparable across processes on one machine. */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** A bench payload of about `bytes` bytes carrying the send time and a counter. */
export function benchPayload(n: number, padding: string): string {
  return `{"rb":${nowMicros()},"n":${n}${padding}}`;
}

/** The padding that brings a payload to about `bytes` bytes. */
export function paddingFor(bytes: number): string {
  const base = `{"rb":${nowMicros()},"n":1000000}`.length;
  const extra = bytes - base - 8;
  return extra > 0 ? `,"p":"${'x'.repeat(extra)}"` : '';
}

/**
 * One connection's scanner. Feed it chunks in arrival order; it keeps the few bytes of a marker or
 * timestamp split across two chunks.
 */
export class MarkerScanner {
  /** Events seen. */
  count = 0;
  private carry: Buffer | null = null;
  private untilSample: number;

  /**
   * @param sample read the timestamp of one event in `sample` (1 = every event)
   * @param onLatency called with publish→receive latency in µs for sampled events
   */
  constructor(
    private readonly sample: number,
    private readonly onLatency: (micros: number) => void,
  ) {
    // Start at a random phase so connections do not all sample the same events.
    this.untilSample = 1 + Math.floor(Math.random() * sample);
  }

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.carry !== null) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = null;
    }
    let pos = 0;
    let now = 0;
    for (;;) {
      const at = buf.indexOf(MARKER_BUF, pos);
      if (at === -1) break;
      const digits = at + MARKER_BUF.length;
      let end = digits;
      while (end < buf.length && buf[end]! >= ZERO && buf[end]! <= NINE) end++;
      if (end === buf.length) {
        // The timestamp may go on in the next chunk: keep the marker for then.
        this.carry = Buffer.from(buf.subarray(at));
        return;
      }
      this.count++;
      if (--this.untilSample === 0) {
        this.untilSample = this.sample;
        let t = 0;
        for (let i = digits; i < end; i++) t = t * 10 + (buf[i]! - ZERO);
        if (now === 0) now = nowMicros();
        this.onLatency(Math.max(0, now - t));
      }
      pos = end;
    }
    // A marker may start in the last few bytes: keep only a tail that is a prefix of it.
    for (let k = Math.min(MARKER_BUF.length - 1, buf.length - pos); k > 0; k--) {
      if (buf.compare(MARKER_BUF, 0, k, buf.length - k) === 0) {
        this.carry = Buffer.from(buf.subarray(buf.length - k));
        return;
      }
    }
  }
}

/**
 * A chunked-transfer-encoding decoder that hands on the data bytes of each chunk (as subarrays,
 * no copies except for a size line split across reads). Hand-written: it runs on every byte the
 * generator receives.
 */
export function dechunker(out: (b: Buffer) => void): (b: Buffer) => void {
  /** Data bytes left in the current chunk; -1 while reading a size line. */
  let left = -1;
  /** CRLF bytes still to skip after a chunk's data. */
  let trail = 0;
  let line = '';
  return (b: Buffer): void => {
    let i = 0;
    while (i < b.length) {
      if (trail > 0) {
        const n = Math.min(trail, b.length - i);
        trail -= n;
        i += n;
        continue;
      }
      if (left > 0) {
        const n = Math.min(left, b.length - i);
        out(b.subarray(i, i + n));
        left -= n;
        i += n;
        if (left === 0) {
          trail = 2;
          left = -1;
        }
        continue;
      }
      const eol = b.indexOf(0x0a, i);
      if (eol === -1) {
        line += b.toString('latin1', i);
        if (line.length > 1024) throw new Error('chunk size line too long');
        return;
      }
      line += b.toString('latin1', i, eol);
      i = eol + 1;
      const sizeLine = line.trim();
      line = '';
      // The blank line that ends the body after the last chunk.
      if (sizeLine === '') continue;
      const size = parseInt(sizeLine, 16);
      if (!Number.isFinite(size)) throw new Error('bad chunk size line');
      if (size === 0) {
        left = -1;
        trail = 0;
        continue;
      }
      left = size;
    }
  };
}
