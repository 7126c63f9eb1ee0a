import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NodeEntry, PresenceStore, RemoteChange, StoredEntry } from './store.js';
import {
  CLOSE_WAIT_MS,
  decodeChange,
  decodeEntry,
  encodeChange,
  encodeEntry,
  within,
  type StoreLog,
} from './codec.js';

export interface NatsPresenceOptions {
  /** Comma-separated servers, as `nats.url`. */
  url: string;
  prefix: string;
  /** A node that stops refreshing its liveness key has its entries ignored after this long. */
  ttlMs: number;
  log?: StoreLog;
}

/** A string as a KV key token: base64url behind a letter, so it is never empty. */
function token(letter: string, s: string): string {
  return letter + Buffer.from(s, 'utf8').toString('base64url');
}

function untoken(t: string): string {
  return Buffer.from(t.slice(1), 'base64url').toString('utf8');
}

/**
 * Presence shared through NATS JetStream key-value buckets (the nats engine's servers):
 * - `<prefix>_presence`: key `<topic>.<node>.<sub>` (each base64url-encoded), value the entry's JSON;
 * - `<prefix>_presence_nodes`: key `<node>`, in a bucket whose entries live `ttlMs`, put again
 *   every third of it; readers ignore (and purge) the entries of nodes not in it, so a node that
 *   died has its members gone within `ttlMs`;
 * - subject `<prefix>.presence.changes`: every write with its entry, which keeps the other nodes'
 *   views current (a lost message is repaired by their periodic reads).
 * A node whose liveness entry had expired writes its entries again.
 */
export class NatsPresenceStore implements PresenceStore {
  readonly node = randomBytes(8).toString('hex');
  private readonly ready: Promise<{ nc: NatsConnection; members: KV; nodes: KV }>;
  private readonly subject: string;
  private readonly listeners: ((change: RemoteChange) => void)[] = [];
  private readonly mine = new Map<string, Map<string, StoredEntry>>();
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: NatsPresenceOptions) {
    this.subject = `${options.prefix}.presence.changes`;
    this.ready = this.start();
    this.ready.catch(() => undefined);
  }

  private async start(): Promise<{ nc: NatsConnection; members: KV; nodes: KV }> {
    const nc = await this.connectFirst();
    const js = jetstream(nc);
    const kvm = new Kvm(js);
    const members = await kvm.create(`${this.options.prefix}_presence`, { history: 1 });
    const nodesName = `${this.options.prefix}_presence_nodes`;
    const nodes = await kvm.create(nodesName, { history: 1, ttl: this.options.ttlMs });
    // A bucket made with another ttl keeps it: bring it to this one.
    const status = await nodes.status();
    if (status.ttl !== this.options.ttlMs) {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(`KV_${nodesName}`);
      await jsm.streams.update(`KV_${nodesName}`, {
        ...info.config,
        max_age: this.options.ttlMs * 1_000_000,
      });
    }
    nc.subscribe(this.subject, {
      callback: (_err, msg) => {
        const c = decodeChange(msg.string());
        if (!c || c.node === this.node) return;
        for (const l of this.listeners) l(c);
      },
    });
    const s = { nc, members, nodes };
    this.heartbeat = setInterval(() => void this.beat(s), Math.max(100, this.options.ttlMs / 3));
    this.heartbeat.unref();
    await this.beat(s);
    return s;
  }

  /**
   * The first connection, tried again until it succeeds or the store closes (then it throws);
   * once connected, the client reconnects by itself.
   */
  private async connectFirst(): Promise<NatsConnection> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new Error('presence store closed');
      try {
        const nc = await connect({
          servers: this.options.url.split(','),
          name: `rill-presence-${this.node}`,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
        });
        if (!this.closed) return nc;
        await nc.close();
      } catch {
        await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 2_000)).unref());
      }
    }
  }

  /** Refreshes this node's liveness; writes its entries again when the entry had expired. */
  private async beat(s: { nc: NatsConnection; members: KV; nodes: KV }): Promise<void> {
    if (this.closed) return;
    try {
      const was = await s.nodes.get(this.node);
      await s.nodes.put(this.node, '1');
      if ((was === null || was.operation !== 'PUT') && this.mine.size > 0) {
        for (const [topic, subs] of this.mine) {
          for (const [sub, e] of subs) await s.members.put(this.key(topic, sub), encodeEntry(e));
          s.nc.publish(this.subject, encodeChange(this.node, topic));
        }
      }
    } catch (err) {
      this.options.log?.warn({ err }, 'presence: could not refresh this node in NATS');
    }
  }

  private key(topic: string, sub: string): string {
    return `${token('t', topic)}.${this.node}.${token('s', sub)}`;
  }

  async write(topic: string, sub: string, entry: StoredEntry | null): Promise<void> {
    let subs = this.mine.get(topic);
    if (entry) {
      if (!subs) this.mine.set(topic, (subs = new Map()));
      subs.set(sub, entry);
    } else {
      subs?.delete(sub);
      if (subs?.size === 0) this.mine.delete(topic);
    }
    const s = await this.ready;
    if (entry) await s.members.put(this.key(topic, sub), encodeEntry(entry));
    else await s.members.purge(this.key(topic, sub));
    s.nc.publish(this.subject, encodeChange(this.node, topic, sub, entry));
  }

  async read(topic: string): Promise<NodeEntry[]> {
    const s = await this.ready;
    const alive = new Set<string>();
    for await (const k of await s.nodes.keys()) alive.add(k);
    const last = new Map<string, { node: string; sub: string; value: string | null }>();
    for await (const e of await s.members.history({ key: `${token('t', topic)}.>` })) {
      const parts = e.key.split('.');
      if (parts.length !== 3) continue;
      last.set(e.key, {
        node: parts[1]!,
        sub: untoken(parts[2]!),
        value: e.operation === 'PUT' ? e.string() : null,
      });
    }
    const out: NodeEntry[] = [];
    for (const [key, { node, sub, value }] of last) {
      if (value === null) continue;
      if (!alive.has(node) && node !== this.node) {
        // A dead node's entry: gone for every reader from now on.
        void s.members.purge(key).catch(() => undefined);
        continue;
      }
      const e = decodeEntry(value);
      if (e) out.push({ node, sub, ...e });
    }
    return out;
  }

  onRemoteChange(listener: (change: RemoteChange) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    let s;
    try {
      s = await Promise.race([
        this.ready,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('not connected')), 0)),
      ]);
    } catch {
      return;
    }
    // Bounded: with NATS away the entries expire by themselves, and a shutdown must not wait.
    await within(s.nodes.purge(this.node), CLOSE_WAIT_MS);
    await within(s.nc.close(), CLOSE_WAIT_MS);
  }
}
