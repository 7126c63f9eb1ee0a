/**
 * `@rill/react`: `useStream`, `usePresence` and a provider that shares one Rill client.
 */
export { RillProvider, useRillClient } from './provider.js';
export type { RillProviderProps } from './provider.js';
export { useStream } from './use-stream.js';
export type { StreamState, UseStreamOptions } from './use-stream.js';
export { usePresence } from './use-presence.js';
export type { PresenceState } from './use-presence.js';
