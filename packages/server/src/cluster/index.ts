/**
 * Commands between the nodes of a cluster (redis and nats engines), each over its own broker
 * connection: a node tells the others to end a subject's connections. Imports the model only.
 */
export {
  decodeCommand,
  encodeCommand,
  MAX_COMMAND_SUB_LENGTH,
  type ClusterBus,
  type ClusterCommand,
} from './bus.js';
export { NatsClusterBus } from './nats.js';
export { RedisClusterBus } from './redis.js';
