/**
 * The shared Redis and NATS as engines of `rill serve` child processes: the flags and environment
 * that point a node at the broker under a key or stream prefix no other test run uses, and the
 * clean-up that drops what the nodes stored there. Nodes given the same backend share one log.
 */
import { dropStreams, SHARED_NATS_URL, uniqueNatsPrefix } from './nats.js';
import { dropPrefix, SHARED_REDIS_URL, uniquePrefix } from './redis.js';

export interface BrokerBackend {
  engine: 'redis' | 'nats';
  /** `rill serve` flags naming the broker (`--engine` is left to the caller). */
  args: string[];
  /** `RILL_*` variables: the prefix of this backend. */
  env: Record<string, string>;
  /** Drops every key or stream under the prefix. */
  cleanup: () => Promise<void>;
}

/** The shared Redis under a new key prefix starting with `what`. */
export function redisBackend(what = 'rilltest'): BrokerBackend {
  const prefix = uniquePrefix(what);
  return {
    engine: 'redis',
    args: ['--redis-url', SHARED_REDIS_URL],
    env: { RILL_REDIS__PREFIX: prefix },
    cleanup: () => dropPrefix(SHARED_REDIS_URL, prefix),
  };
}

/** The shared NATS under a new stream prefix starting with `what`. */
export function natsBackend(what = 'rt'): BrokerBackend {
  const prefix = uniqueNatsPrefix(what);
  return {
    engine: 'nats',
    args: ['--nats-url', SHARED_NATS_URL],
    env: { RILL_NATS__PREFIX: prefix },
    cleanup: () => dropStreams(SHARED_NATS_URL, prefix),
  };
}
