import { webhookSecrets, type WebhookConfig } from '../config.js';
import type { Coordination, Engine } from '../engine/engine.js';
import { DeliveryLoop, stateKeys, type Leadership, type WebhookLog } from './loop.js';
import type { WebhookMetrics } from './metrics.js';

/**
 * Outgoing webhooks (docs/webhooks.md): for each configured webhook, a lease in the engine
 * ({@link Coordination}) decides which node of a cluster runs its {@link DeliveryLoop}; every node
 * tries to take it every third of `webhookLease`, so a leader that dies is replaced within the
 * lease and a third of it. Imports the model, the engine contract and the configuration.
 */
export { DeliveryLoop, DEAD_LETTER_TYPE, stateKeys, type WebhookLog } from './loop.js';
export { WebhookMetrics, type AttemptResult } from './metrics.js';
export { post, MAX_ANSWER_BYTES, type PostResult } from './post.js';

export interface WebhooksOptions {
  engine: Engine & Coordination;
  /** This node's id among the nodes sharing the engine (the lease owner). */
  node: string;
  leaseMs: number;
  metrics: WebhookMetrics;
  log: WebhookLog;
}

/** The webhooks of one node. */
export class Webhooks {
  private readonly runners: Runner[];

  constructor(specs: readonly WebhookConfig[], options: WebhooksOptions) {
    this.runners = specs.map((s) => new Runner(s, options));
  }

  start(): void {
    for (const r of this.runners) r.start();
  }

  /** Stops every loop and gives the leases up, so another node takes over at once. */
  async close(): Promise<void> {
    await Promise.all(this.runners.map((r) => r.close()));
  }
}

/** One webhook on one node: the lease, and the loop while it holds it. */
class Runner implements Leadership {
  fence = 0;
  validUntil = 0;
  private leading = false;
  private loop: DeliveryLoop | null = null;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | null = null;
  private closed = false;
  private readonly lease: string;
  private lastSecrets: string[] = [];
  private readonly startedAt = Date.now();

  constructor(
    private readonly spec: WebhookConfig,
    private readonly o: WebhooksOptions,
  ) {
    this.lease = stateKeys(spec.name).lease;
    this.lastSecrets = webhookSecrets(spec);
  }

  start(): void {
    this.o.metrics.leader(this.spec.name, false);
    this.timer = setInterval(() => this.tick(), Math.max(100, Math.floor(this.o.leaseMs / 3)));
    this.timer.unref();
    this.tick();
  }

  private tick(): void {
    if (this.ticking || this.closed) return;
    this.ticking = this.renew().finally(() => (this.ticking = null));
  }

  /** Takes or renews the lease; starts or stops the loop to match. */
  private async renew(): Promise<void> {
    const sent = Date.now();
    let token: number | null;
    try {
      token = await this.o.engine.acquireLease(this.lease, this.o.node, this.o.leaseMs);
    } catch (err) {
      // Unknown: keep leading until the lease as last taken runs out, then stop.
      if (this.leading && Date.now() >= this.validUntil) await this.stepDown('lease not renewed');
      if (!this.closed) {
        this.o.log.warn(
          { webhook: this.spec.name, err: (err as Error).message },
          'webhook: could not take or renew the lease',
        );
      }
      return;
    }
    if (this.closed) {
      if (token !== null) await this.o.engine.releaseLease(this.lease, this.o.node).catch(() => {});
      return;
    }
    if (token === null) {
      if (this.leading) await this.stepDown('another node holds the lease');
      return;
    }
    this.fence = token;
    this.validUntil = sent + this.o.leaseMs;
    if (!this.leading) {
      this.leading = true;
      this.o.metrics.leader(this.spec.name, true);
      this.o.log.info(
        { webhook: this.spec.name, fence: token },
        'webhook: delivering from this node',
      );
      this.loop = new DeliveryLoop(
        this.spec,
        this.o.engine,
        this,
        () => this.secrets(),
        this.o.metrics,
        this.o.log,
        this.startedAt,
      );
      this.loop.start();
    }
  }

  /** The secrets, read again (a secret file may have been rotated); the last good on failure. */
  private secrets(): string[] {
    try {
      this.lastSecrets = webhookSecrets(this.spec);
    } catch (err) {
      this.o.log.warn(
        { webhook: this.spec.name, err: (err as Error).message },
        'webhook: cannot read the secret file; signing with the secrets read before',
      );
    }
    return this.lastSecrets;
  }

  deposed(): void {
    void this.stepDown('another node took the lease');
  }

  private async stepDown(why: string): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.validUntil = 0;
    this.o.metrics.leader(this.spec.name, false);
    this.o.metrics.lag(this.spec.name, 0);
    this.o.log.info(
      { webhook: this.spec.name, why },
      'webhook: no longer delivering from this node',
    );
    const loop = this.loop;
    this.loop = null;
    await loop?.stop();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.ticking;
    const was = this.leading;
    await this.stepDown('closing');
    if (was) await this.o.engine.releaseLease(this.lease, this.o.node).catch(() => {});
  }
}
