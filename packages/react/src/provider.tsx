import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from 'react';
import { createClient, type ClientOptions, type RillClient } from '@rill/client';

const RillContext = createContext<RillClient | null>(null);

/** Props of {@link RillProvider}: a client to share, or options to create one. */
export interface RillProviderProps {
  /** A client to share. When absent, the provider creates one from `options` and owns it. */
  client?: RillClient;
  /** Options of the client the provider creates (ignored with `client`). Read once. */
  options?: ClientOptions;
  /**
   * The token of the client the provider creates (wins over `options.token`): a string or a
   * function, as the client's `token` option. Unlike `options`, it is followed as it changes:
   * the client always asks for the latest value, and a new string is sent at once (a WebSocket
   * authenticates again; SSE and long-poll use it from their next request). So a token kept in
   * state is enough: after `token_expired` the subscription retries, with backoff, until a new
   * one comes. Give it from the first render (render the provider once signed in).
   */
  token?: ClientOptions['token'];
  children?: ReactNode;
}

type Token = RillProviderProps['token'];

/**
 * Shares one Rill client with every hook below it. A client the provider created is closed
 * (every subscription ended) when the provider unmounts.
 */
export function RillProvider({ client, options, token, children }: RillProviderProps): ReactNode {
  const latest = useRef<Token>(token);
  // Creating a client opens nothing: StrictMode calling this twice costs no connection.
  const [own] = useState(() => {
    if (client) return null;
    if (token === undefined) return createClient(options);
    // A function reading the latest prop: the client never holds on to a stale one.
    const current = (): string | Promise<string> => {
      const t = latest.current;
      return typeof t === 'function' ? t() : (t ?? '');
    };
    return createClient({ ...options, token: current });
  });
  useEffect(() => (own ? () => own.close() : undefined), [own]);
  useEffect(() => {
    const before = latest.current;
    latest.current = token;
    // A new string is news; a function is only asked when a token is needed (an inline arrow
    // is new at every render, and calling it each time could flood a token endpoint).
    if (own && typeof token === 'string' && token !== before) own.refreshToken().catch(() => {});
  }, [own, token]);
  return <RillContext.Provider value={client ?? own}>{children}</RillContext.Provider>;
}

/** The client of the nearest {@link RillProvider}. */
export function useRillClient(): RillClient {
  const c = useContext(RillContext);
  if (!c) throw new Error('useRillClient/useStream must be used inside a <RillProvider>');
  return c;
}
