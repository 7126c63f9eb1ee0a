/**
 * Presence: who is subscribed to a topic, over every node sharing a broker (redis, nats) or in
 * this process (memory, lmdb). Imports the model only; the routes call it.
 */
export {
  LocalPresenceStore,
  type NodeEntry,
  type PresenceStore,
  type RemoteChange,
  type StoredEntry,
} from './store.js';
export { NatsPresenceStore, type NatsPresenceOptions } from './nats.js';
export { RedisPresenceStore, type RedisPresenceOptions } from './redis.js';
export {
  MAX_INFO_BYTES,
  PresenceService,
  boundedInfo,
  merge,
  type Member,
  type PresenceChange,
  type PresenceCount,
  type PresenceListener,
  type PresenceOptions,
  type PresencePage,
} from './service.js';
