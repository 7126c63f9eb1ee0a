import type { Logger } from 'pino';

/** Most topics or patterns a stream's log line lists; `topicCount` says how many there were. */
const MAX_LOGGED_TOPICS = 10;

/** What a stream's end line says. */
export interface StreamEnd {
  /** `sse`, `ndjson`, `ws` or `poll`. */
  transport: string;
  /** The topics and patterns it asked for. */
  topics: readonly string[];
  /** How many it asked for, when `topics` lists only some. */
  topicCount?: number;
  startedAt: number;
  events: number;
  bytes: number;
  /**
   * Why it ended: `client_closed`, `revoked`, an error code (`shutting_down`, `token_expired`,
   * `ping_timeout`, `engine_unavailable`, …); for a long-poll `page` or `timeout`.
   */
  reason: string;
  /** Times the subscriber fell behind its socket and caught up from the log. */
  fellBehind?: number;
  /** A WebSocket's close code. */
  closeCode?: number;
}

/** The topics of a log line: at most {@link MAX_LOGGED_TOPICS}, and the count when cut. */
export function loggedTopics(topics: readonly string[]): {
  topics: readonly string[];
  topicCount?: number;
} {
  return topics.length <= MAX_LOGGED_TOPICS
    ? { topics }
    : { topics: topics.slice(0, MAX_LOGGED_TOPICS), topicCount: topics.length };
}

/**
 * The one line a stream's end writes (`info`; a long-poll's at `debug`, since a client polling
 * writes one per page): its id, transport, topics, how long it lasted, the events and bytes it was
 * sent and why it ended. Written on the component logger with `reqId` as a field, so no per-stream
 * child logger is made for it.
 */
export function logStreamEnd(
  log: Logger,
  reqId: string,
  end: StreamEnd,
  level: 'info' | 'debug' = 'info',
): void {
  if (!log.isLevelEnabled(level)) return;
  log[level](
    {
      reqId,
      transport: end.transport,
      ...loggedTopics(end.topics),
      ...(end.topicCount !== undefined && end.topicCount > end.topics.length
        ? { topicCount: end.topicCount }
        : {}),
      durationMs: Date.now() - end.startedAt,
      events: end.events,
      bytes: end.bytes,
      reason: end.reason,
      ...(end.fellBehind ? { fellBehind: end.fellBehind } : {}),
      ...(end.closeCode === undefined ? {} : { closeCode: end.closeCode }),
    },
    'stream ended',
  );
}

/** The debug line of a stream that opened. */
export function logStreamOpen(
  log: Logger,
  reqId: string,
  transport: string,
  topics: readonly string[],
): void {
  if (log.isLevelEnabled('debug')) {
    log.debug({ reqId, transport, ...loggedTopics(topics) }, 'stream opened');
  }
}
