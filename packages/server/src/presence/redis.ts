import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
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

export interface RedisPresenceOptions {
  url: string;
  prefix: string;
  /** A node that stops refreshing its liveness key has its entries ignored after this long. */
  ttlMs: number;
  log?: StoreLog;
}

/**
 * Presence shared through Redis (the redis engine's server):
 * - `<prefix>:presence:m:<topic>`: a hash, field `<node>|<sub>`, value the entry's JSON;
 * - `<prefix>:presence:alive:<node>`: set with a TTL of `ttlMs`, refreshed every third of it;
 *   readers ignore (and delete) the fields of nodes whose key expired, so a node that died has its
 *   members gone within `ttlMs`;
 * - channel `<prefix>:presence:changes`: every write with its entry, which keeps the other nodes'
 *   views current (a lost message is repaired by their periodic reads).
 * A node whose liveness key had expired (Redis restarted or flushed, a long outage) writes its
 * entries again.
 */
export class RedisPresenceStore implements PresenceStore {
  readonly node = randomBytes(8).toString('hex');
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly prefix: string;
  private readonly channel: string;
  private readonly aliveKey: string;
  private readonly listeners: ((change: RemoteChange) => void)[] = [];
  /** What this node wrote, to write again after the store lost it. */
  private readonly mine = new Map<string, Map<string, StoredEntry>>();
  private readonly heartbeat: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly options: RedisPresenceOptions) {
    this.prefix = `${options.prefix}:presence`;
    this.channel = `${this.prefix}:changes`;
    this.aliveKey = `${this.prefix}:alive:${this.node}`;
    const common = {
      connectTimeout: 5_000,
      retryStrategy: (times: number) => Math.min(50 * times, 1_000),
    };
    this.cmd = new Redis(options.url, {
      ...common,
      maxRetriesPerRequest: 1,
      commandTimeout: 5_000,
      enableAutoPipelining: true,
    });
    this.sub = new Redis(options.url, { ...common, maxRetriesPerRequest: null });
    this.cmd.on('error', () => undefined);
    this.sub.on('error', () => undefined);
    this.sub.on('message', (_channel: string, text: string) => this.message(text));
    void this.sub.subscribe(this.channel).catch(() => undefined);
    this.heartbeat = setInterval(() => void this.beat(), Math.max(100, options.ttlMs / 3));
    this.heartbeat.unref();
    void this.beat();
  }

  private membersKey(topic: string): string {
    return `${this.prefix}:m:${topic}`;
  }

  private message(text: string): void {
    const c = decodeChange(text);
    if (!c || c.node === this.node) return;
    for (const l of this.listeners) l(c);
  }

  /** Refreshes this node's liveness; writes its entries again when the key had expired. */
  private async beat(): Promise<void> {
    if (this.closed) return;
    try {
      const was = await this.cmd.set(this.aliveKey, '1', 'PX', this.options.ttlMs, 'GET');
      if (was === null && this.mine.size > 0) {
        const multi = this.cmd.multi();
        for (const [topic, subs] of this.mine) {
          for (const [sub, e] of subs) {
            multi.hset(this.membersKey(topic), `${this.node}|${sub}`, encodeEntry(e));
          }
        }
        await multi.exec();
        for (const topic of this.mine.keys()) {
          await this.cmd.publish(this.channel, encodeChange(this.node, topic));
        }
      }
    } catch (err) {
      this.options.log?.warn({ err }, 'presence: could not refresh this node in Redis');
    }
  }

  async write(topic: string, sub: string, entry: StoredEntry | null): Promise<void> {
    let subs = this.mine.get(topic);
    const field = `${this.node}|${sub}`;
    const key = this.membersKey(topic);
    const multi = this.cmd.multi();
    if (entry) {
      if (!subs) this.mine.set(topic, (subs = new Map()));
      subs.set(sub, entry);
      multi.hset(key, field, encodeEntry(entry));
    } else {
      subs?.delete(sub);
      if (subs?.size === 0) this.mine.delete(topic);
      multi.hdel(key, field);
    }
    multi.publish(this.channel, encodeChange(this.node, topic, sub, entry));
    await multi.exec();
  }

  async read(topic: string): Promise<NodeEntry[]> {
    const key = this.membersKey(topic);
    const all = await this.cmd.hgetall(key);
    const byNode = new Map<string, { sub: string; value: string }[]>();
    for (const [field, value] of Object.entries(all)) {
      const bar = field.indexOf('|');
      if (bar <= 0) continue;
      const node = field.slice(0, bar);
      let list = byNode.get(node);
      if (!list) byNode.set(node, (list = []));
      list.push({ sub: field.slice(bar + 1), value });
    }
    if (byNode.size === 0) return [];
    const nodes = [...byNode.keys()];
    const alive = await this.cmd.mget(nodes.map((n) => `${this.prefix}:alive:${n}`));
    const out: NodeEntry[] = [];
    const dead: string[] = [];
    nodes.forEach((node, i) => {
      const list = byNode.get(node)!;
      if (alive[i] === null && node !== this.node) {
        for (const { sub } of list) dead.push(`${node}|${sub}`);
        return;
      }
      for (const { sub, value } of list) {
        const e = decodeEntry(value);
        if (e) out.push({ node, sub, ...e });
      }
    });
    // The fields of dead nodes: gone for every reader from now on.
    if (dead.length > 0) void this.cmd.hdel(key, ...dead).catch(() => undefined);
    return out;
  }

  onRemoteChange(listener: (change: RemoteChange) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    // Bounded: with Redis away the key expires by itself, and a shutdown must not wait.
    await within(this.cmd.del(this.aliveKey), CLOSE_WAIT_MS);
    this.sub.disconnect();
    this.cmd.disconnect();
  }
}
