import { randomUUID } from 'node:crypto';
import type { Limiter, Subject } from './limiter.js';

/** What one node tells the others about one subject. */
export interface NodeRecord {
  /** Tokens taken on that node since it started counting the subject, per rate limit. */
  consumed: [number, number, number, number];
  connections: number;
  subscriptions: number;
  /** How long that node has been counting the subject, ms. */
  age: number;
}

/**
 * How the nodes exchange their counts through the broker: this node's records go out, the other
 * nodes' latest records (still fresh: their node is alive) for the same subjects come back.
 */
export interface SyncTransport {
  exchange(
    node: string,
    mine: Map<string, NodeRecord>,
  ): Promise<Map<string, Map<string, NodeRecord>>>;
  close(): Promise<void>;
}

/** Log lines about the exchange (a broker outage, once). */
export interface SyncLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** A subject is exchanged while in use, and this long after. */
const ACTIVE_MS = 10_000;

/**
 * Limits shared by the nodes of a cluster (redis and nats engines): every `interval` each node
 * sends, for each subject in use, what it consumed since it started counting it and what it holds
 * open, and gets the other nodes' back. It charges its own buckets with what the others consumed
 * since the last exchange and counts their open streams and subscriptions in its checks. Requests
 * never wait for the broker: a node decides on what it knows, at most one interval old.
 *
 * Accuracy (docs/limits.md § Across nodes): over any period T the cluster admits at most
 * `rate × T + nodes × (burst + rate × interval)` of a rate limit, and a count limit is exceeded by
 * at most what the other nodes opened within one interval. A node that dies stops refreshing its
 * records and the others drop its counts after a few intervals. Without the broker each node goes
 * on counting alone.
 */
export class SharedLimits {
  readonly node = randomUUID();
  private readonly timer: NodeJS.Timeout;
  /** Per subject, per other node: the consumption last seen, to charge only the difference. */
  private readonly seen = new Map<string, Map<string, number[]>>();
  private current: Promise<void> | null = null;
  private failing = false;
  private stopped = false;
  /** A record first seen counts whole when its node started counting within this, ms. */
  private readonly recentMs: number;

  constructor(
    private readonly limiter: Limiter,
    private readonly transport: SyncTransport,
    interval: number,
    private readonly log: SyncLog | undefined,
  ) {
    this.recentMs = Math.max(1_000, interval * 5);
    this.timer = setInterval(() => {
      if (this.current === null) void this.sync();
    }, interval);
    this.timer.unref();
  }

  /**
   * One exchange, started after the one under way (if any) ends: what this node counted until
   * now is sent (tests call it to wait for one).
   */
  async sync(): Promise<void> {
    while (this.current !== null) await this.current;
    if (this.stopped) return;
    this.current = this.exchange();
    try {
      await this.current;
    } finally {
      this.current = null;
    }
  }

  private async exchange(): Promise<void> {
    try {
      const now = Date.now();
      const mine = new Map<string, NodeRecord>();
      const subjects = new Map<string, Subject>();
      for (const s of this.limiter.all()) {
        if (s.connections === 0 && s.subscriptions === 0 && now - s.lastUsed > ACTIVE_MS) {
          if (s.remote.connections !== 0 || s.remote.subscriptions !== 0) {
            // Still told about: keep listening, with nothing of ours.
          } else {
            this.seen.delete(s.id);
            continue;
          }
        }
        subjects.set(s.id, s);
        mine.set(s.id, {
          consumed: [...s.consumed] as NodeRecord['consumed'],
          connections: s.connections,
          subscriptions: s.subscriptions,
          age: now - s.created,
        });
      }
      const theirs = await this.transport.exchange(this.node, mine);
      if (this.failing) {
        this.failing = false;
        this.log?.info({}, 'rate limits: shared counts exchanged again');
      }
      this.apply(subjects, theirs, Date.now());
    } catch (err) {
      if (!this.failing) {
        this.failing = true;
        this.log?.warn(
          { err },
          'rate limits: cannot exchange counts with the other nodes; each node counts alone until the broker is back',
        );
      }
    }
  }

  private apply(
    subjects: Map<string, Subject>,
    theirs: Map<string, Map<string, NodeRecord>>,
    now: number,
  ): void {
    for (const [id, s] of subjects) {
      const nodes = theirs.get(id);
      let connections = 0;
      let subscriptions = 0;
      let seen = this.seen.get(id);
      if (nodes) {
        if (!seen) this.seen.set(id, (seen = new Map()));
        for (const [node, r] of nodes) {
          if (node === this.node) continue;
          connections += r.connections;
          subscriptions += r.subscriptions;
          // First sight of that node's record: what it consumed counts if it is recent (it
          // started counting within a few intervals); an older total is history, not charged.
          const before = seen.get(node) ?? (r.age <= this.recentMs ? [0, 0, 0, 0] : r.consumed);
          for (let i = 0; i < 4; i++) {
            // Smaller than before: that node forgot the subject and started again from 0.
            const d = r.consumed[i]! >= before[i]! ? r.consumed[i]! - before[i]! : r.consumed[i]!;
            s.charge(i, d, now);
          }
          seen.set(node, r.consumed);
        }
        for (const node of seen.keys()) if (!nodes.has(node)) seen.delete(node);
      } else {
        this.seen.delete(id);
      }
      s.remote.connections = connections;
      s.remote.subscriptions = subscriptions;
    }
  }

  /** How many other nodes' records this node holds for subject `id`. */
  peers(id: string): number {
    return this.seen.get(id)?.size ?? 0;
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.transport.close();
  }
}
