/**
 * What the hooks layer is built from: the resolved `hooks` section of the configuration (durations
 * in ms). Declared here rather than imported so that this layer depends on the model and the auth
 * layer only; the configuration's schema produces exactly this shape.
 */
export interface HookSettings {
  /** Asked once per connection (a stream, a WebSocket, each long-poll): allow, deny or enrich. */
  connect?: { url: string } | undefined;
  /** Asked once per topic (or pattern) per connection. */
  subscribe?: { url: string } | undefined;
  /** Asked for every publish request (or WebSocket publish), unless `cacheTtl` keeps an answer. */
  publish?: { url: string } | undefined;
  /** How long a hook call may take, ms; past it the failure policy decides. */
  timeout: number;
  /** What a timeout, an unreachable backend or an answer that is not a decision means. */
  failurePolicy: 'deny' | 'allow';
  /** The shared secret the requests are signed with (`rill-signature`). */
  secret?: string | undefined;
  /** Several secrets during a rotation: each request carries one signature per secret. */
  secrets?: string[] | undefined;
  /**
   * How long a decision about a publish, or about a long-poll's connect and subscribe, is kept
   * for the same credential, client address and topic, ms; 0 keeps none.
   */
  cacheTtl: number;
}

/** The hooks, by name. */
export const HOOK_NAMES = ['connect', 'subscribe', 'publish'] as const;
export type HookName = (typeof HOOK_NAMES)[number];

/** What a call ended with: the backend's decision, or why there was none. */
export const HOOK_OUTCOMES = ['allow', 'deny', 'timeout', 'error'] as const;
export type HookOutcome = (typeof HOOK_OUTCOMES)[number];

/** Whether any hook is configured. */
export function hooksConfigured(s: HookSettings | undefined): boolean {
  return s !== undefined && (s.connect ?? s.subscribe ?? s.publish) !== undefined;
}
