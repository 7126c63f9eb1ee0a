import type { Logger } from 'pino';
import type { Authenticator } from '../auth/index.js';
import type { RillConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import type { Hub } from '../fanout/hub.js';
import type { ConnectionBudget } from '../net/capacity.js';
import type { RequestLimits } from './limits.js';
import type { LoadMonitor } from '../net/overload.js';
import type { Observability } from './observability.js';
import type { PresenceService } from '../presence/index.js';
import type { Hooks } from '../hooks/index.js';
import type { ClusterBus } from '../cluster/index.js';
import type { OpenStreams } from './open-streams.js';
import type { WorkerPeers } from './worker-views.js';

/**
 * What every route needs. It lives apart from `app.ts` so that a route module depends on the
 * context alone, and only `app.ts` imports the routes.
 */
export interface AppContext {
  config: RillConfig;
  engine: Engine;
  hub: Hub;
  /** Who is subscribed to which topic; null when `presence.enabled` is false. */
  presence: PresenceService | null;
  /** The backend hooks; null when no hook is configured. */
  hooks: Hooks | null;
  /** Commands to every node of a cluster (disconnect a user); null on a single node. */
  cluster: ClusterBus | null;
  /** Set once shutdown begins: new streams are refused, readiness fails. */
  state: { closing: boolean };
  /** Refuses new streams once connections near the open-files limit. */
  budget?: ConnectionBudget;
  /** Refuses new streams, WebSocket connections and publishes while the event loop is overloaded. */
  load?: LoadMonitor;
  /** Who a request is (`enabled` false: everything is allowed, as without an `auth` section). */
  auth: Authenticator;
  /** Open streams by credential, to end them at expiry or when the credential is revoked. */
  streams: OpenStreams;
  /**
   * The loggers of the components with a level of their own (`log.levels`): HTTP requests and
   * streams log through `http` (also Fastify's logger), WebSocket connections through `ws`.
   */
  logs: { http: Logger; ws: Logger };
  /** Rate and count limits per key, user and client address (`enabled` false: none). */
  limits: RequestLimits;
  /** Counters, metrics and stats; absent where nothing is counted (some tests). */
  obs?: Observability;
  /** With `rill serve --workers`: the other workers, for the views over all of them. */
  workers?: WorkerPeers;
}
