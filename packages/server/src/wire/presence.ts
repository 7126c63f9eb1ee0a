import { sseData } from './sse.js';
import { FRAME_END } from './ws.js';

/**
 * A join or leave as a subscriber that asked for presence receives it (docs/protocol.md §
 * Presence). It is no log event: no seq, no id, so a resume position never moves for it.
 */
export interface PresenceNotice {
  kind: 'join' | 'leave';
  topic: string;
  sub: string;
  info?: Record<string, unknown>;
}

function body(n: PresenceNotice): string {
  return JSON.stringify(
    n.info === undefined
      ? { topic: n.topic, sub: n.sub }
      : { topic: n.topic, sub: n.sub, info: n.info },
  );
}

/** SSE: `event: join` or `event: leave`, without an `id:` line (Last-Event-ID stays as it was). */
export function ssePresenceFrame(n: PresenceNotice): string {
  return `event: ${n.kind}\n${sseData(body(n))}\n`;
}

/** NDJSON: `{"join":{topic,sub,info}}` or `{"leave":{…}}`, without a cursor. */
export function ndjsonPresenceLine(n: PresenceNotice): string {
  return `{"${n.kind}":${body(n)}}\n`;
}

/** WebSocket: `{"op":"join","sub":<subscription id>,"topic":…,"member":{sub,info}}`. */
export function wsPresenceFrame(subscription: string, n: PresenceNotice): string {
  const member = JSON.stringify(
    n.info === undefined ? { sub: n.sub } : { sub: n.sub, info: n.info },
  );
  return `{"op":"${n.kind}","sub":${JSON.stringify(subscription)},"topic":${JSON.stringify(n.topic)},"member":${member}}${FRAME_END}`;
}
