/**
 * The options every NATS connection of a node is opened with (the engine's, and the side
 * connections of the limits exchange and the cluster commands): comma-separated servers, retried
 * for ever every `reconnectTimeWait` ms, and the client's own PING/PONG as the liveness probe, so a
 * silent connection is replaced. Plain data: each layer passes it to `connect` itself.
 */
export function natsConnectOptions(
  url: string,
  name: string,
  reconnectTimeWait = 250,
): {
  servers: string[];
  name: string;
  maxReconnectAttempts: number;
  reconnectTimeWait: number;
  pingInterval: number;
  maxPingOut: number;
} {
  return {
    servers: url.split(','),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait,
    pingInterval: 5_000,
    maxPingOut: 2,
  };
}
