import type { Cursor, Position } from '../model/cursor.js';
import { encodeCursor } from '../model/cursor.js';
import type { TopicHead } from '../engine/engine.js';

/** Where a topic's delivery starts when the cursor says nothing about it. */
export type StartSpec =
  | { kind: 'now' }
  | { kind: 'earliest' }
  /** Deliver events with seq > `seq`. */
  | { kind: 'after'; seq: number }
  /** Deliver events with time >= `time`. */
  | { kind: 'time'; time: number };

/**
 * How far behind "now" a watermark reaches when it stands for topics a cursor does not list: a
 * topic created on another node just before the moment the watermark names, not yet known here,
 * still resumes whole. Used by every cursor the server hands out: a subscription's own
 * (`Subscription.cursorFor`) and the start cursor of a WebSocket `subscribed` reply
 * ({@link startCursor}).
 */
export const WATERMARK_MARGIN_MS = 1000;

/**
 * Whether the subscription resumes exactly where asked: every topic the cursor (or a `since=<seq>`
 * start) positions exists in the same epoch with the position inside its retained range
 * (`firstSeq - 1 <= seq <= lastSeq`). False means a `reset` notice will follow for some topic.
 */
export function resumeIsExact(
  topics: readonly string[],
  heads: ReadonlyMap<string, TopicHead | null>,
  start: StartSpec,
  cursor: Cursor | undefined,
): boolean {
  for (const t of topics) {
    const head = heads.get(t) ?? null;
    const pos = cursor?.positions.get(t);
    if (pos) {
      if (!head || head.epoch !== pos.epoch) return false;
      if (pos.seq < head.firstSeq - 1 || pos.seq > head.lastSeq) return false;
    } else if (start.kind === 'after' && cursor?.watermark === undefined && head) {
      if (start.seq < head.firstSeq - 1 || start.seq > head.lastSeq) return false;
    }
  }
  return true;
}

/**
 * The cursor a client resumes from if it goes away before this subscription delivers anything:
 * never past an event the subscription will deliver (at-least-once), as close as the facts at
 * hand allow. Topics the cursor lists keep their position; plain topics read before the hub
 * attached them get the position their start spec gives; the rest are covered by a watermark no
 * later than the earliest event they can start from (0 when that is unknown).
 */
export function startCursor(o: {
  topics: readonly string[];
  before: ReadonlyMap<string, TopicHead | null>;
  start: StartSpec;
  cursor: Cursor | undefined;
  pattern: boolean;
  t0: number;
  maxTopics: number;
}): string {
  const { start, cursor } = o;
  const unlistedFloor =
    cursor?.watermark !== undefined
      ? cursor.watermark
      : start.kind === 'now'
        ? o.t0 - WATERMARK_MARGIN_MS
        : start.kind === 'time'
          ? start.time
          : 0;
  const listed: Array<{ topic: string; pos: Position; floor: number }> = [];
  let watermark: number | undefined = o.pattern ? unlistedFloor : undefined;
  for (const topic of o.topics) {
    const given = cursor?.positions.get(topic);
    if (given) {
      listed.push({ topic, pos: given, floor: 0 });
      continue;
    }
    const head = o.before.get(topic);
    if (head && cursor?.watermark === undefined) {
      if (start.kind === 'now') {
        listed.push({
          topic,
          pos: { epoch: head.epoch, seq: head.lastSeq },
          floor: o.t0 - WATERMARK_MARGIN_MS,
        });
        continue;
      }
      if (start.kind === 'earliest') {
        listed.push({ topic, pos: { epoch: head.epoch, seq: head.firstSeq - 1 }, floor: 0 });
        continue;
      }
      if (start.kind === 'after') {
        listed.push({ topic, pos: { epoch: head.epoch, seq: start.seq }, floor: 0 });
        continue;
      }
    }
    watermark = Math.min(watermark ?? unlistedFloor, unlistedFloor);
  }
  // Keep the cursor within what a client may send back; the dropped ones fall to the watermark.
  for (const dropped of listed.splice(o.maxTopics)) {
    watermark = Math.min(watermark ?? dropped.floor, dropped.floor);
  }
  const positions = new Map<string, Position>(listed.map((l) => [l.topic, l.pos]));
  return encodeCursor({
    positions,
    ...(watermark === undefined ? {} : { watermark: Math.max(0, watermark) }),
  });
}
