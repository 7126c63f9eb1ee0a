/**
 * @rill/server public API. Everything users import comes from here.
 */
export { createServer } from './server.js';
export type { RillServer, CreateServerOptions } from './server.js';
export { resolveConfig, ConfigError } from './config.js';
export type { RillConfig, RillConfigInput } from './config.js';
export { RillError, ERRORS, isRillError } from './errors.js';
export type { ErrorCode, ErrorSpec } from './errors.js';
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
export type { RillEvent, EventInput } from './event.js';
export { encodeCursor, decodeCursor, encodePosition } from './cursor.js';
export type { Cursor, Position } from './cursor.js';
export { isTopic, isValidPattern, matchPattern } from './topic.js';
export { Hub } from './hub.js';
export type { Sink, ResetNotice } from './sink.js';
