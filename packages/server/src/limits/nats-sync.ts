import { connect, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { NodeRecord, SyncTransport } from './shared.js';
import { natsConnectOptions } from '../model/broker.js';

/** Records per message: keeps a message well under NATS' default 1 MiB payload. */
const CHUNK = 500;

interface Received {
  record: NodeRecord;
  at: number;
}

/**
 * Shared limits through NATS (the nats engine's `nats.url` and `nats.prefix`): each node publishes
 * its records on `<prefix>.limits` and keeps the latest record of every other node. Core NATS, not
 * a KV bucket: a record is a running total, so one lost message costs nothing the next does not
 * carry, and state that is worthless after a few seconds needs no stream on disk. A node's records
 * count for `fresh` ms after they arrived.
 */
export class NatsSync implements SyncTransport {
  private nc: NatsConnection | undefined;
  private sub: Subscription | undefined;
  private readonly connecting: Promise<void>;
  private readonly subject: string;
  /** Subject → node → its latest record. */
  private readonly latest = new Map<string, Map<string, Received>>();
  private node = '';
  private closed = false;

  constructor(
    url: string,
    prefix: string,
    private readonly fresh: number,
  ) {
    this.subject = `${prefix}.limits`;
    this.connecting = this.start(url);
    this.connecting.catch(() => undefined);
  }

  private async start(url: string): Promise<void> {
    const nc = await connect(natsConnectOptions(url, 'rill-limits'));
    if (this.closed) {
      await nc.close();
      return;
    }
    this.nc = nc;
    this.sub = nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err) return;
        this.receive(msg.string());
      },
    });
  }

  private receive(text: string): void {
    let m: { node?: unknown; records?: unknown };
    try {
      m = JSON.parse(text) as typeof m;
    } catch {
      return;
    }
    if (typeof m.node !== 'string' || m.node === this.node || !Array.isArray(m.records)) return;
    const now = Date.now();
    for (const r of m.records as unknown[]) {
      if (!Array.isArray(r) || r.length !== 8 || typeof r[0] !== 'string') continue;
      const n = r.slice(1).map(Number);
      if (!n.every(Number.isFinite)) continue;
      let nodes = this.latest.get(r[0]);
      if (!nodes) this.latest.set(r[0], (nodes = new Map()));
      nodes.set(m.node, {
        record: {
          consumed: [n[0]!, n[1]!, n[2]!, n[3]!],
          connections: n[4]!,
          subscriptions: n[5]!,
          age: n[6]!,
        },
        at: now,
      });
    }
  }

  async exchange(
    node: string,
    mine: Map<string, NodeRecord>,
  ): Promise<Map<string, Map<string, NodeRecord>>> {
    this.node = node;
    await this.connecting;
    const nc = this.nc;
    if (!nc || nc.isClosed()) throw new Error('NATS connection closed');
    const records = [...mine].map(([id, r]) => [
      id,
      ...r.consumed,
      r.connections,
      r.subscriptions,
      r.age,
    ]);
    for (let at = 0; at < records.length; at += CHUNK) {
      nc.publish(this.subject, JSON.stringify({ node, records: records.slice(at, at + CHUNK) }));
    }
    // Sent before the exchange ends (a round trip to the server, not to the other nodes).
    await nc.flush();
    const now = Date.now();
    const out = new Map<string, Map<string, NodeRecord>>();
    for (const [id, nodes] of this.latest) {
      for (const [n, r] of nodes) if (now - r.at > this.fresh) nodes.delete(n);
      if (nodes.size === 0) {
        this.latest.delete(id);
        continue;
      }
      if (!mine.has(id)) continue;
      out.set(id, new Map([...nodes].map(([n, r]) => [n, r.record])));
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.sub?.unsubscribe();
    await this.nc?.close().catch(() => undefined);
  }
}
