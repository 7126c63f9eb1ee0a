/**
 * `@rill/react`: `useStream` and a provider that shares one Rill client.
 */
export { RillProvider, useRillClient } from './provider.js';
export type { RillProviderProps } from './provider.js';
export { useStream } from './use-stream.js';
export type { StreamState, UseStreamOptions } from './use-stream.js';
