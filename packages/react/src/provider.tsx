import { createContext, useContext, useEffect, useState, type ReactNode } from 'react';
import { createClient, type ClientOptions, type RillClient } from '@rill/client';

const RillContext = createContext<RillClient | null>(null);

/** Props of {@link RillProvider}: a client to share, or options to create one. */
export interface RillProviderProps {
  /** A client to share. When absent, the provider creates one from `options` and owns it. */
  client?: RillClient;
  /** Options of the client the provider creates (ignored with `client`). Read once. */
  options?: ClientOptions;
  children?: ReactNode;
}

/**
 * Shares one Rill client with every hook below it. A client the provider created is closed
 * (every subscription ended) when the provider unmounts.
 */
export function RillProvider({ client, options, children }: RillProviderProps): ReactNode {
  // Creating a client opens nothing: StrictMode calling this twice costs no connection.
  const [own] = useState(() => (client ? null : createClient(options)));
  useEffect(() => (own ? () => own.close() : undefined), [own]);
  return <RillContext.Provider value={client ?? own}>{children}</RillContext.Provider>;
}

/** The client of the nearest {@link RillProvider}. */
export function useRillClient(): RillClient {
  const c = useContext(RillContext);
  if (!c) throw new Error('useRillClient/useStream must be used inside a <RillProvider>');
  return c;
}
