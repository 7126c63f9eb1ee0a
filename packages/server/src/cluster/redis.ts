import { Redis } from 'ioredis';
import {
  encodeCommand,
  Listeners,
  newBusNode,
  within,
  type ClusterBus,
  type ClusterCommand,
} from './bus.js';

/**
 * Cluster commands over Redis pub/sub (the redis engine's `redis.url` and `redis.prefix`): one
 * channel, `<prefix>:control`, on a connection of its own (a subscribed connection can do nothing
 * else), and a second one to publish. Pub/sub delivers to the nodes subscribed at that moment;
 * a node that is down misses the command, and has no connections to end.
 */
export class RedisClusterBus implements ClusterBus {
  readonly node = newBusNode();
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly channel: string;
  private readonly listeners = new Listeners(this.node);
  private readonly subscribed: Promise<unknown>;

  constructor(url: string, prefix: string) {
    this.channel = `${prefix}:control`;
    const options = {
      connectTimeout: 5_000,
      maxRetriesPerRequest: 1,
      commandTimeout: 2_000,
      retryStrategy: (times: number) => Math.min(50 * times, 1_000),
    };
    this.pub = new Redis(url, { ...options, enableOfflineQueue: false });
    this.sub = new Redis(url, options);
    this.pub.on('error', () => undefined);
    this.sub.on('error', () => undefined);
    this.sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.listeners.receive(message);
    });
    // ioredis subscribes again by itself after a reconnect.
    this.subscribed = this.sub.subscribe(this.channel);
    this.subscribed.catch(() => undefined);
  }

  async ready(timeoutMs: number): Promise<void> {
    await within(this.subscribed, timeoutMs, 'cluster commands (redis)');
  }

  async send(cmd: ClusterCommand): Promise<void> {
    await this.pub.publish(this.channel, encodeCommand(this.node, cmd));
  }

  onCommand(listener: (cmd: ClusterCommand, from: string) => void): void {
    this.listeners.add(listener);
  }

  async close(): Promise<void> {
    this.pub.disconnect();
    this.sub.disconnect();
  }
}
