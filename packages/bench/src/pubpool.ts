/**
 * Several publishers run as one: each owns a slice of the topics and either a share of the step's
 * offered rate or a fixed rate of its own (the shared topic of the many-topics scenario). Their
 * per-topic acknowledgements are summed into one array indexed like the bench's topic list, so
 * expected deliveries stay exact: Σ acked(topic) × subscribers(topic).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Publisher, type PublisherOptions, type PublishStats } from './publisher.js';
import type { FromPubWorker, ToPubWorker } from './pubworker.js';

export interface PublisherLike {
  readonly stats: PublishStats;
  open(): Promise<void>;
  run(rate: number, seconds: number): Promise<{ issued: number; issueSeconds: number }>;
  close(): void;
}

/** A {@link Publisher} in a forked process (pubworker.ts); `stats` is updated after each run. */
export class RemotePublisher implements PublisherLike {
  stats: PublishStats;
  private readonly proc: ChildProcess;
  private waiting: ((m: FromPubWorker) => void) | null = null;
  private exited: Error | null = null;

  constructor(private readonly o: PublisherOptions) {
    this.stats = { perTopic: o.topics.map(() => 0), acked: 0, errors: 0, requests: 0 };
    this.proc = fork(fileURLToPath(new URL('./pubworker.js', import.meta.url)), [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.proc.on('message', (m: FromPubWorker) => {
      const w = this.waiting;
      this.waiting = null;
      w?.(m);
    });
    this.proc.once('exit', (code) => {
      this.exited = new Error(`bench publisher exited with ${code}`);
      const w = this.waiting;
      this.waiting = null;
      w?.({ type: 'opened', error: this.exited.message });
    });
  }

  private request(m: ToPubWorker): Promise<FromPubWorker> {
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.proc.send(m);
    });
  }

  async open(): Promise<void> {
    const r = await this.request({ cmd: 'open', options: this.o });
    if (r.type === 'opened' && r.error !== undefined) throw new Error(r.error);
  }

  async run(rate: number, seconds: number): Promise<{ issued: number; issueSeconds: number }> {
    const r = await this.request({ cmd: 'run', rate, seconds });
    if (r.type !== 'ran') throw new Error(r.error ?? 'bench publisher failed');
    this.stats = r.stats;
    return { issued: r.issued, issueSeconds: r.issueSeconds };
  }

  close(): void {
    if (this.proc.connected) this.proc.send({ cmd: 'stop' } satisfies ToPubWorker);
  }
}

export interface PoolMember {
  pub: PublisherLike;
  /** Index in the bench's topic list of each of this publisher's topics, in its order. */
  topics: number[];
  /** A fixed offered rate, events/s, whatever the step's (0: this member does not publish). */
  fixedRate?: number;
  /** Otherwise its share of the step's offered rate (0 = unthrottled stays unthrottled). */
  share: number;
}

export class PublisherPool {
  constructor(
    private readonly members: PoolMember[],
    private readonly topicCount: number,
  ) {}

  get size(): number {
    return this.members.length;
  }

  async open(): Promise<void> {
    await Promise.all(this.members.map((m) => m.pub.open()));
  }

  /**
   * Runs every member for `seconds` at its rate: `rate` × share, or its fixed rate. Resolves with
   * the events issued and the longest issuing time among them.
   */
  async run(rate: number, seconds: number): Promise<{ issued: number; issueSeconds: number }> {
    const rs = await Promise.all(
      this.members.map((m) => {
        if (m.fixedRate === undefined) return m.pub.run(rate * m.share, seconds);
        if (m.fixedRate > 0) return m.pub.run(m.fixedRate, seconds);
        return Promise.resolve({ issued: 0, issueSeconds: 0 });
      }),
    );
    return {
      issued: rs.reduce((n, r) => n + r.issued, 0),
      issueSeconds: Math.max(0, ...rs.map((r) => r.issueSeconds)),
    };
  }

  /** Events acknowledged so far per topic, summed over the members. */
  perTopic(): number[] {
    const out = new Array<number>(this.topicCount).fill(0);
    for (const m of this.members) {
      m.pub.stats.perTopic.forEach((n, i) => {
        out[m.topics[i]!]! += n;
      });
    }
    return out;
  }

  get errors(): number {
    return this.members.reduce((n, m) => n + m.pub.stats.errors, 0);
  }

  get firstError(): string | undefined {
    return this.members.find((m) => m.pub.stats.firstError !== undefined)?.pub.stats.firstError;
  }

  close(): void {
    for (const m of this.members) m.pub.close();
  }
}

/**
 * The pool for a bench: the own topics (`0 … topics.length − 1`) split round-robin over
 * `processes` publishers, each with an equal share of the rate (in this process when there is one),
 * and the shared topic (index `topics.length`), if any, published in this process at `sharedRate`.
 */
export function buildPool(
  base: Omit<PublisherOptions, 'topics'>,
  topics: string[],
  processes: number,
  shared?: { topic: string; rate: number },
): PublisherPool {
  const members: PoolMember[] = [];
  const n = Math.max(1, Math.min(processes, topics.length));
  for (let k = 0; k < n; k++) {
    const idx: number[] = [];
    for (let t = k; t < topics.length; t += n) idx.push(t);
    const options: PublisherOptions = { ...base, topics: idx.map((t) => topics[t]!) };
    members.push({
      pub: processes > 1 ? new RemotePublisher(options) : new Publisher(options),
      topics: idx,
      share: idx.length / topics.length,
    });
  }
  if (shared) {
    members.push({
      pub: new Publisher({ ...base, topics: [shared.topic] }),
      topics: [topics.length],
      fixedRate: shared.rate,
      share: 0,
    });
  }
  return new PublisherPool(members, topics.length + (shared ? 1 : 0));
}
