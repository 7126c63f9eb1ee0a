import { resolve } from 'node:path';
import type { RillConfig } from '../config.js';
import type { Engine, EngineLog, EngineOptions } from './engine.js';
import { LmdbEngine } from './lmdb.js';
import { MemoryEngine } from './memory.js';
import { NatsEngine } from './nats.js';
import { RedisEngine } from './redis.js';

/** Builds the engine the configuration names. */
export function createEngine(config: RillConfig, log?: EngineLog): Engine {
  const options: EngineOptions = {
    retention: {
      maxEvents: config.retention.maxEvents,
      maxAgeMs: config.retention.maxAge,
      rules: config.retention.rules.map((r) => ({
        pattern: r.pattern,
        ...(r.maxEvents === undefined ? {} : { maxEvents: r.maxEvents }),
        ...(r.maxAge === undefined ? {} : { maxAgeMs: r.maxAge }),
      })),
    },
    idempotencyWindowMs: config.idempotencyWindow,
    ...(log === undefined ? {} : { log }),
  };
  switch (config.engine) {
    case 'memory':
      return new MemoryEngine(options);
    case 'lmdb':
      return new LmdbEngine({ ...options, path: resolve(config.dataDir) });
    case 'redis':
      return new RedisEngine({ ...options, url: config.redis.url, prefix: config.redis.prefix });
    case 'nats':
      return new NatsEngine({
        ...options,
        url: config.nats.url,
        prefix: config.nats.prefix,
        replicas: config.nats.replicas,
      });
  }
}
