// How a topic's log is written in JetStream: one message per append group, its events as a JSON
// array of `[type, key, data]` triples, the first seq, the count, the time and the byte offset in
// headers; the stream's description carries the epoch and the creation time.

import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node';
import type { StoredMsg } from '@nats-io/jetstream';
import type { EventInput, RillEvent } from '../../model/event.js';
import { decodeTrace, encodeTrace } from '../../model/trace.js';
import { makeEvent } from '../common.js';
import type { RetentionOverride } from '../engine.js';

const H_SEQ = 'Rill-Seq';
const H_TIME = 'Rill-Time';
const H_COUNT = 'Rill-N';
const H_OFFSET = 'Rill-Off';

/**
 * One stored event: `[type, key, data]`, `null` for a field the event does not have, and a fourth
 * member, its trace context ({@link encodeTrace}), only when it has one.
 */
export type Triple = [string | null, string | null, string, string?];

/** An event as stored. */
export function toTriple(input: EventInput): Triple {
  const t: Triple = [input.type ?? null, input.key ?? null, input.data];
  if (input.trace !== undefined) t.push(encodeTrace(input.trace));
  return t;
}

/** A batch message: one append group, consecutive seqs. */
export interface Batch {
  msgSeq: number;
  first: number;
  count: number;
  time: number;
  /**
   * The bytes (as `eventBytes` in `common.ts` counts them) of the events appended in the epoch
   * before this batch; 0 in
   * messages written before the header existed.
   */
  offset: number;
  events: Triple[];
}

export function batchHeaders(first: number, count: number, time: number, offset = 0): MsgHdrs {
  const h = natsHeaders();
  h.set(H_SEQ, String(first));
  h.set(H_COUNT, String(count));
  h.set(H_TIME, String(time));
  h.set(H_OFFSET, String(offset));
  return h;
}

/** The bytes of a batch's events, counted as `eventBytes` in `common.ts` counts them. */
export function batchBytes(events: readonly Triple[]): number {
  let n = 0;
  for (const [type, key, data, trace] of events) {
    n += Buffer.byteLength(data);
    if (type !== null) n += Buffer.byteLength(type);
    if (key !== null) n += Buffer.byteLength(key);
    if (typeof trace === 'string') n += trace.length;
  }
  return n;
}

/** The batch a stored message holds; `null` for the genesis message or anything not a batch. */
export function parseBatch(msg: StoredMsg): Batch | null {
  return parseJsMsg(msg.header, msg.data, msg.seq);
}

/** {@link parseBatch} of a message as a consumer delivers it. */
export function parseJsMsg(h: MsgHdrs | undefined, data: Uint8Array, msgSeq: number): Batch | null {
  if (h === undefined) return null;
  const first = Number(h.get(H_SEQ));
  const count = Number(h.get(H_COUNT));
  const time = Number(h.get(H_TIME));
  const offset = Number(h.get(H_OFFSET)) || 0;
  if (!(first >= 1) || !(count >= 1)) return null;
  let events: Batch['events'];
  try {
    events = JSON.parse(new TextDecoder().decode(data)) as Batch['events'];
  } catch {
    return null;
  }
  if (!Array.isArray(events) || events.length !== count) return null;
  return { msgSeq, first, count, time, offset, events };
}

/** What a topic's stream description holds besides the epoch and creation time. */
export interface LogSettings {
  /** Seqs before it were purged (`Engine.purge`): hidden even where a message still holds them. */
  floor?: number;
  /** The topic's retention override (`Engine.setRetention`). */
  retention?: RetentionOverride;
}

/**
 * The description of a topic's stream: `rill:<epoch>:<created ms>`, then `:f<floor>` after a purge
 * and `:r<maxEvents>,<maxAgeMs>,<maxBytes>` (empty fields not set) with a retention override. In
 * the stream's own configuration, so every node reads it with the stream's state and a deleted
 * stream takes it along.
 */
export function describeLog(epoch: string, created: number, settings: LogSettings = {}): string {
  let d = `rill:${epoch}:${created}`;
  if (settings.floor !== undefined && settings.floor > 1) d += `:f${settings.floor}`;
  const r = settings.retention;
  if (r !== undefined) d += `:r${r.maxEvents ?? ''},${r.maxAgeMs ?? ''},${r.maxBytes ?? ''}`;
  return d;
}

const DESCRIPTION_RE = /^rill:([A-Za-z0-9]+):(\d+)(?::f(\d+))?(?::r(\d*),(\d*),(\d*))?$/;

export function parseDescription(
  d: string | undefined,
): ({ epoch: string; created: number } & LogSettings) | null {
  const m = d === undefined ? null : DESCRIPTION_RE.exec(d);
  if (m === null) return null;
  const out: { epoch: string; created: number } & LogSettings = {
    epoch: m[1]!,
    created: Number(m[2]),
  };
  if (m[3] !== undefined) out.floor = Number(m[3]);
  if (m[4] !== undefined) {
    const r: RetentionOverride = {};
    if (m[4] !== '') r.maxEvents = Number(m[4]);
    if (m[5] !== '') r.maxAgeMs = Number(m[5]);
    if (m[6] !== '') r.maxBytes = Number(m[6]);
    out.retention = r;
  }
  return out;
}

/** A stored `[type, key, data]` triple as the event at `seq`. */
export function toEvent(
  topic: string,
  epoch: string,
  seq: number,
  time: number,
  [type, key, data, trace]: Triple,
): RillEvent {
  const input: EventInput = { data };
  if (type !== null) input.type = type;
  const t = decodeTrace(trace);
  if (t !== undefined) input.trace = t;
  if (key !== null) input.key = key;
  return makeEvent(topic, epoch, seq, time, input);
}
