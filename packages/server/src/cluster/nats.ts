import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  encodeCommand,
  Listeners,
  newBusNode,
  within,
  type ClusterBus,
  type ClusterCommand,
} from './bus.js';
import { natsConnectOptions } from '../model/broker.js';

/**
 * Cluster commands over core NATS (the nats engine's `nats.url` and `nats.prefix`): one subject,
 * `<prefix>.control`, on a connection of its own. Core NATS delivers to the nodes subscribed at
 * that moment; a node that is down misses the command, and has no connections to end.
 */
export class NatsClusterBus implements ClusterBus {
  readonly node = newBusNode();
  private nc: NatsConnection | undefined;
  private readonly subject: string;
  private readonly listeners = new Listeners(this.node);
  private readonly connecting: Promise<void>;
  private closed = false;

  constructor(url: string, prefix: string) {
    this.subject = `${prefix}.control`;
    this.connecting = this.start(url);
    this.connecting.catch(() => undefined);
  }

  private async start(url: string): Promise<void> {
    const nc = await connect(natsConnectOptions(url, 'rill-cluster'));
    if (this.closed) {
      await nc.close();
      return;
    }
    this.nc = nc;
    nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (!err) this.listeners.receive(msg.string());
      },
    });
    // The subscription is on the server once a round trip has gone through after it.
    await nc.flush();
  }

  async ready(timeoutMs: number): Promise<void> {
    await within(this.connecting, timeoutMs, 'cluster commands (nats)');
  }

  async send(cmd: ClusterCommand): Promise<void> {
    await within(this.connecting, 5_000, 'cluster commands (nats)');
    const nc = this.nc;
    if (!nc || nc.isClosed()) throw new Error('NATS connection closed');
    nc.publish(this.subject, encodeCommand(this.node, cmd));
    await within(nc.flush(), 2_000, 'cluster commands (nats)');
  }

  onCommand(listener: (cmd: ClusterCommand, from: string) => void): void {
    this.listeners.add(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.nc?.close().catch(() => undefined);
  }
}
