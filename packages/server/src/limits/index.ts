export { ClientAddresses, addressKey, forwardedHops, normalizeAddress } from './client-address.js';
export { Lease, Limiter, Subject } from './limiter.js';
export { NatsSync } from './nats-sync.js';
export { RedisSync } from './redis-sync.js';
export { SharedLimits, type NodeRecord, type SyncLog, type SyncTransport } from './shared.js';
export type { LimitSettings } from './settings.js';
export { TokenBucket } from './token-bucket.js';
export { KnownTopics } from './topics.js';
