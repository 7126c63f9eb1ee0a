/**
 * Backend hooks: the application's backend allows, denies or enriches connections, subscriptions
 * and publishes (docs/protocol.md § Backend hooks). Imports the model and the auth layer only; the
 * routes call it.
 */
export {
  callHook,
  HookFailure,
  MAX_HOOK_INFO_BYTES,
  MAX_HOOK_RESPONSE_BYTES,
  parseDecision,
  type FetchLike,
  type HookDecision,
} from './client.js';
export {
  applyConnect,
  HookMeter,
  Hooks,
  HookSession,
  summarize,
  type ConnectDecision,
  type HookClientInfo,
  type HookLog,
  type PublishSummary,
} from './service.js';
export {
  HOOK_NAMES,
  HOOK_OUTCOMES,
  hooksConfigured,
  type HookName,
  type HookOutcome,
  type HookSettings,
} from './settings.js';
