// What Redis answers, decoded: stream entries, pub/sub messages, meta hashes, stream ids.

import type { EventInput, RillEvent } from '../../model/event.js';
import type { TopicHead } from '../engine.js';
import { decodeTrace } from '../../model/trace.js';
import { makeEvent } from '../common.js';

/** A stream entry as `XRANGE` returns it. */
export type StreamEntry = [id: string, fields: string[]];

/** The append script's reply: the epoch, then `[seq, time, duplicate, original fields]` per event. */
export type AppendReply = [string, number, ...[number, number, number, string[] | null][]];

/** A batch as the append script publishes it on the topic's channel. */
export interface Message {
  epoch: string;
  from: number;
  to: number;
  time: number;
  /**
   * The batch's `[type, key, data, trace?]`, `false` for a missing field; null when not inlined.
   * `trace` is there only for an event that has one.
   */
  events: [string | false, string | false, string, string?][] | null;
}

/** `epoch|from|to|time|json-or-empty`, as the append script publishes it. */
export function parseMessage(message: string): Message | null {
  const parts: string[] = [];
  let at = 0;
  for (let i = 0; i < 4; i++) {
    const bar = message.indexOf('|', at);
    if (bar < 0) return null;
    parts.push(message.slice(at, bar));
    at = bar + 1;
  }
  const body = message.slice(at);
  const [epoch, from, to, time] = parts as [string, string, string, string];
  let events: Message['events'] = null;
  if (body !== '') {
    try {
      events = JSON.parse(body) as Message['events'];
    } catch {
      events = null;
    }
    if (!Array.isArray(events) || events.length !== Number(to) - Number(from) + 1) events = null;
  }
  return { epoch, from: Number(from), to: Number(to), time: Number(time), events };
}

/** The events a message carries inline (`m.events` must not be null). */
export function messageEvents(topic: string, m: Message): RillEvent[] {
  return (m.events ?? []).map(([type, key, data, trace], i) => {
    const input: EventInput = { data };
    if (type !== false) input.type = type;
    if (key !== false) input.key = key;
    const t = decodeTrace(trace);
    if (t !== undefined) input.trace = t;
    return makeEvent(topic, m.epoch, m.from + i, m.time, input);
  });
}

export function fromFields(topic: string, epoch: string, seq: number, fields: string[]): RillEvent {
  const input: EventInput = { data: 'null' };
  let time = 0;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const v = fields[i + 1] as string;
    switch (fields[i]) {
      case 't':
        time = Number(v);
        break;
      case 'd':
        input.data = v;
        break;
      case 'y':
        input.type = v;
        break;
      case 'k':
        input.key = v;
        break;
      case 'r': {
        const t = decodeTrace(v);
        if (t !== undefined) input.trace = t;
        break;
      }
    }
  }
  return makeEvent(topic, epoch, seq, time, input);
}

export function fromEntry(topic: string, epoch: string, [id, fields]: StreamEntry): RillEvent {
  return fromFields(topic, epoch, parseInt(id, 10), fields);
}

/** The head from the meta hash's `e`, `c`, `f`, `l`, `t`; null when the topic has no log. */
export function toHead(topic: string, m: (string | null)[]): TopicHead | null {
  const [epoch, created, first, last, lastTime] = m;
  if (epoch === null || epoch === undefined) return null;
  return {
    topic,
    epoch,
    firstSeq: Number(first),
    lastSeq: Number(last),
    created: Number(created),
    lastTime: Number(lastTime),
  };
}

/** Orders two stream ids `ms-seq`. */
export function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am !== bm ? am - bm : as - bs;
}
