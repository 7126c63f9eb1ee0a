/**
 * @rill/server public API. Everything users import comes from here.
 */
export { createServer } from './server.js';
export type { RillServer, CreateServerOptions } from './server.js';
export { resolveConfig, ConfigError } from './config.js';
export type { RillConfig, RillConfigInput } from './config.js';
export { RillError, ERRORS, isRillError } from './model/errors.js';
export type { ErrorCode, ErrorSpec } from './model/errors.js';
export type {
  Engine,
  EngineOptions,
  AppendResult,
  ReadResult,
  TopicHead,
  RetentionConfig,
  RetentionRule,
  WatchListener,
  HealthCheck,
} from './engine/engine.js';
export { MemoryEngine } from './engine/memory.js';
export { LmdbEngine } from './engine/lmdb.js';
export type { RillEvent, EventInput } from './model/event.js';
export { encodeCursor, decodeCursor, encodePosition } from './model/cursor.js';
export type { Cursor, Position } from './model/cursor.js';
export { isTopic, isValidPattern, matchPattern } from './model/topic.js';
export { Hub } from './fanout/hub.js';
export {
  signatureHeader,
  verifySignature,
  SIGNATURE_HEADER,
  DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
} from './model/signature.js';
export type { SignatureCheck } from './model/signature.js';
export type { WebhookConfig } from './config.js';
export type { Sink, ResetNotice } from './fanout/sink.js';
