import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Attempt durations, seconds: a millisecond to five minutes (the longest `timeout`). */
const ATTEMPT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** How one request ended. */
export type AttemptResult = 'success' | 'http_error' | 'timeout' | 'network_error';

/**
 * The webhooks' Prometheus series (docs/observability.md), one label `webhook` whose values are the
 * configured names (at most 100): nothing when metrics are off.
 */
export class WebhookMetrics {
  private readonly batches: Counter<'webhook' | 'outcome'> | null = null;
  private readonly events: Counter<'webhook' | 'outcome'> | null = null;
  private readonly attempts: Counter<'webhook' | 'result'> | null = null;
  private readonly duration: Histogram<'webhook'> | null = null;
  private readonly lagGauge: Gauge<'webhook'> | null = null;
  private readonly leaderGauge: Gauge<'webhook'> | null = null;
  private readonly skippedCounter: Counter<'webhook'> | null = null;

  constructor(registry: Registry | null) {
    if (registry === null) return;
    const registers = [registry];
    this.batches = new Counter({
      name: 'rill_webhook_deliveries_total',
      help: 'Webhook batches done, by outcome: delivered (a 2xx answer) or dead_lettered (after maxAttempts failures)',
      labelNames: ['webhook', 'outcome'],
      registers,
    });
    this.events = new Counter({
      name: 'rill_webhook_events_total',
      help: 'Events in the webhook batches done, by outcome (delivered, dead_lettered)',
      labelNames: ['webhook', 'outcome'],
      registers,
    });
    this.attempts = new Counter({
      name: 'rill_webhook_attempts_total',
      help: 'Webhook requests, by result: success, http_error (not 2xx), timeout, network_error',
      labelNames: ['webhook', 'result'],
      registers,
    });
    this.duration = new Histogram({
      name: 'rill_webhook_attempt_duration_seconds',
      help: 'Webhook requests from sending to the answer (or the timeout)',
      labelNames: ['webhook'],
      buckets: ATTEMPT_BUCKETS,
      registers,
    });
    this.lagGauge = new Gauge({
      name: 'rill_webhook_lag_events',
      help: 'Events stored in the webhook topics and not delivered yet (on the node delivering)',
      labelNames: ['webhook'],
      registers,
    });
    this.leaderGauge = new Gauge({
      name: 'rill_webhook_leader',
      help: "1 on the node running the webhook's delivery loop, 0 on the others",
      labelNames: ['webhook'],
      registers,
    });
    this.skippedCounter = new Counter({
      name: 'rill_webhook_skipped_events_total',
      help: 'Events retention dropped before the webhook delivered them',
      labelNames: ['webhook'],
      registers,
    });
  }

  attempt(webhook: string, result: AttemptResult, seconds: number): void {
    this.attempts?.inc({ webhook, result });
    this.duration?.observe({ webhook }, seconds);
  }

  done(webhook: string, outcome: 'delivered' | 'dead_lettered', events: number): void {
    this.batches?.inc({ webhook, outcome });
    this.events?.inc({ webhook, outcome }, events);
  }

  lag(webhook: string, events: number): void {
    this.lagGauge?.set({ webhook }, events);
  }

  leader(webhook: string, leading: boolean): void {
    this.leaderGauge?.set({ webhook }, leading ? 1 : 0);
  }

  skipped(webhook: string, events: number): void {
    this.skippedCounter?.inc({ webhook }, events);
  }
}
