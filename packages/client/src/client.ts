import { Backoff, type BackoffOptions } from './backoff.js';
import {
  fromResponse,
  MAX_RETRY_AFTER,
  networkError,
  retryDelay,
  rillError,
  type RillError,
} from './errors.js';
import { settleAuth, TokenSource, withToken, type TokenOption } from './token.js';
import type { Transport, TransportContext } from './transport/transport.js';
import {
  Subscription,
  type SubscribeOptions,
  type SubscriptionHost,
  type TransportName,
} from './subscription.js';
import type {
  EventInput,
  PresencePage,
  PublishResult,
  RillEvent,
  RillNotice,
  TraceContext,
} from './types.js';

/** Options of a client. */
export interface ClientOptions {
  /** The server's base URL. Default: the page's origin in a browser. */
  url?: string;
  /**
   * The credential (a JWT or an API key), or a function that returns one (sync or async). Sent as
   * `Authorization: Bearer` on requests (publish, history, SSE, long-poll) and as the first
   * `auth` message on a WebSocket. A function is called when a token is first needed, again at
   * 80 % of a JWT's lifetime (its `exp`, read without verifying), on the server's
   * `token_expiring`, and after a `token_expired`, after which the stream resumes from its
   * cursor. A string is never refreshed: `token_expired` closes the subscription with that error.
   */
  token?: TokenOption;
  /** Headers sent with every request; a function is called for each request. */
  headers?:
    Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);
  /** `auto` (default: SSE, long-poll when streaming is blocked), `sse`, `ws` or `poll`. */
  transport?: TransportName;
  /** A WebSocket implementation, where the runtime has none (Node 20: `import WebSocket from 'ws'`). */
  WebSocket?: unknown;
  /** A `fetch` implementation. Default: the global one. */
  fetch?: typeof fetch;
  /** Reconnect backoff; also paces publish retries. */
  backoff?: BackoffOptions;
  /** How many times a publish is retried after a retryable failure. Default 5. */
  publishRetries?: number;
  /**
   * Longest wait (ms) a server's `Retry-After` (a `429 rate_limited`, a `503`) is honoured for,
   * before a publish retry or a reconnect; a longer one is cut to it. Default 300 000.
   */
  maxRetryAfter?: number;
  /**
   * SSE: ms to wait for a new stream's first byte before deciding a proxy buffers it (then `auto`
   * falls back to long-poll). Default 10 000.
   */
  firstByteTimeout?: number;
  /**
   * SSE and WebSocket: ms without any byte (the server's heartbeats included) after which the
   * connection counts as dead and is replaced. Default 45 000.
   */
  idleTimeout?: number;
}

/** Options of one publish. */
export interface PublishOptions {
  type?: string;
  /** Idempotency key; default a random one, reused by every retry of this call. */
  key?: string;
  /** W3C trace context stored with the event and delivered to subscribers as its `trace`. */
  trace?: TraceContext;
  signal?: AbortSignal;
  /** Called before each retry: the error that caused it, the attempt that failed, the wait in ms. */
  onRetry?: (retry: PublishRetry) => void;
}

/** What {@link PublishOptions.onRetry} is told. */
export interface PublishRetry {
  error: RillError;
  /** 1 for the first attempt. */
  attempt: number;
  /** Ms until the next attempt. */
  delay: number;
}

/** A key unique enough to dedupe retries: 128 random bits (works outside secure contexts too). */
export function newKey(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(rillError('aborted', 'Aborted'));
      },
      { once: true },
    );
  });
}

/**
 * A Rill client: subscriptions that never lose, repeat or reorder an event, and publishes that
 * never append twice. One client can carry any number of subscriptions.
 *
 * @example
 * ```ts
 * const rill = createClient({ url: 'http://127.0.0.1:8080' });
 * for await (const ev of rill.subscribe<{ price: number }>('prices.*')) console.log(ev.data.price);
 * await rill.publish('orders', { id: 42 }, { type: 'order.created' });
 * ```
 */
export class RillClient {
  private readonly subs = new Set<Subscription<never, never>>();
  private readonly host: SubscriptionHost;
  private readonly tokens: TokenSource;
  readonly url: string;

  constructor(
    private readonly o: ClientOptions,
    transports: SubscriptionHost['transports'],
  ) {
    const url = o.url ?? (globalThis as { location?: { origin: string } }).location?.origin;
    if (!url) throw rillError('invalid_parameter', 'url is required outside a browser');
    this.url = url.replace(/\/+$/, '');
    this.tokens = new TokenSource(o.token, typeof o.headers === 'function');
    const ctx: TransportContext = {
      url: this.url,
      fetch: (i, init) => (o.fetch ?? fetch)(i, init),
      headers: () => this.headers(),
      tokens: this.tokens,
      options: o as Record<string, unknown>,
    };
    this.host = {
      ctx,
      transports,
      transport:
        o.transport ?? (transports.sse ? 'auto' : (Object.keys(transports)[0] as TransportName)),
      backoff: o.backoff ?? {},
      history: async (topic, after, limit, signal) => {
        const page = await this.history(topic, { after, limit, signal });
        return page;
      },
      forget: (s) => this.subs.delete(s),
    };
  }

  private async headers(): Promise<Record<string, string>> {
    const h = this.o.headers;
    return typeof h === 'function' ? await h() : (h ?? {});
  }

  /**
   * Subscribes to topics and patterns (`prices.*`, `orders.>`). The result is an async iterable
   * of events (plus notices with `notices: true`) and takes callbacks; it reconnects by itself.
   */
  subscribe<T = unknown>(
    topics: string | string[],
    options: SubscribeOptions<T> & { notices: true },
  ): Subscription<T, RillEvent<T> | RillNotice>;
  subscribe<T = unknown>(topics: string | string[], options?: SubscribeOptions<T>): Subscription<T>;
  subscribe<T = unknown>(
    topics: string | string[],
    options: SubscribeOptions<T> = {},
  ): Subscription<T, RillEvent<T> | RillNotice> {
    const list = typeof topics === 'string' ? topics.split(',').filter(Boolean) : [...topics];
    if (list.length === 0)
      throw rillError('invalid_parameter', 'subscribe needs at least one topic');
    const sub = new Subscription<T, RillEvent<T> | RillNotice>(list, options, this.host);
    this.subs.add(sub as unknown as Subscription<never, never>);
    return sub;
  }

  /** Publishes one event. Retries are safe: they reuse one idempotency key. */
  async publish<T = unknown>(
    topic: string,
    data: T,
    options: PublishOptions = {},
  ): Promise<PublishResult> {
    const ev: EventInput<T> = { data, key: options.key ?? newKey() };
    if (options.type !== undefined) ev.type = options.type;
    if (options.trace !== undefined) ev.trace = options.trace;
    const [r] = await this.publishBatch(topic, [ev], {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onRetry ? { onRetry: options.onRetry } : {}),
    });
    return r!;
  }

  /**
   * Sends an ephemeral event: delivered to the topic's live subscribers only, never stored,
   * never replayed, and it takes no seq (typing indicators, cursors, "seen" marks). Not retried:
   * an ephemeral event that comes late has lost its point. Throws the server's error.
   */
  async publishEphemeral<T = unknown>(
    topic: string,
    data: T,
    options: Pick<PublishOptions, 'type' | 'trace' | 'signal'> = {},
  ): Promise<{ topic: string; count: number; time: number }> {
    const ev: Record<string, unknown> = { data, ephemeral: true };
    if (options.type !== undefined) ev.type = options.type;
    if (options.trace !== undefined) ev.trace = options.trace;
    let res: Response;
    try {
      res = await this.request(`/v1/topics/${encodeURIComponent(topic)}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(ev),
        signal: options.signal,
      });
    } catch (e) {
      throw networkError(e, options.signal, this.url);
    }
    if (!res.ok) throw settleAuth(await fromResponse(res), this.tokens);
    return (await res.json()) as { topic: string; count: number; time: number };
  }

  /**
   * Publishes events atomically (all or none) with consecutive seqs. Events without a `key` get
   * one, fixed for the retries of this call, so a retried batch is stored once.
   */
  async publishBatch<T = unknown>(
    topic: string,
    events: Array<EventInput<T>>,
    options: Pick<PublishOptions, 'signal' | 'onRetry'> = {},
  ): Promise<PublishResult[]> {
    const base = newKey();
    const body = JSON.stringify(events.map((e, i) => ({ ...e, key: e.key ?? `${base}-${i}` })));
    const backoff = new Backoff(this.o.backoff);
    const retries = this.o.publishRetries ?? 5;
    for (let attempt = 0; ; attempt++) {
      let err: RillError;
      let floor = 0;
      try {
        const res = await this.request(`/v1/topics/${encodeURIComponent(topic)}/events`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: options.signal,
        });
        if (res.ok) {
          const j = (await res.json()) as {
            topic: string;
            epoch: string;
            events: Array<Omit<PublishResult, 'topic' | 'epoch'>>;
          };
          return j.events.map((e) => ({ topic: j.topic, epoch: j.epoch, ...e }));
        }
        err = settleAuth(await fromResponse(res), this.tokens);
        // A 429 or 503 says how long to wait: never retried sooner.
        floor = retryDelay(err, this.o.maxRetryAfter ?? MAX_RETRY_AFTER) ?? 0;
      } catch (e) {
        err = networkError(e, options.signal, this.url);
      }
      if (!err.retryable || attempt >= retries) throw err;
      const delay = backoff.next(floor);
      options.onRetry?.({ error: err, attempt: attempt + 1, delay });
      await sleep(delay, options.signal);
    }
  }

  /** One page of a topic's history, events with seq > `after`. */
  async history<T = unknown>(
    topic: string,
    options: { after?: number | string; limit?: number; signal?: AbortSignal } = {},
  ): Promise<{
    topic: string;
    epoch: string;
    firstSeq: number;
    lastSeq: number;
    events: Array<RillEvent<T>>;
    next: string;
    more: boolean;
  }> {
    const q = new URLSearchParams();
    if (options.after !== undefined) q.set('after', String(options.after));
    if (options.limit !== undefined) q.set('limit', String(options.limit));
    let res: Response;
    try {
      res = await this.request(`/v1/topics/${encodeURIComponent(topic)}/events?${q}`, {
        signal: options.signal,
      });
    } catch (e) {
      throw networkError(e, options.signal, this.url);
    }
    if (!res.ok) throw settleAuth(await fromResponse(res), this.tokens);
    return (await res.json()) as Awaited<ReturnType<RillClient['history']>> as never;
  }

  /**
   * A page of `topic`'s members in `sub` order (`after`: the page's `next`), over every node of
   * the server. Anonymous subscribers are counted, not listed. Needs subscribe permission.
   */
  async presence(
    topic: string,
    options: { after?: string; limit?: number; signal?: AbortSignal } = {},
  ): Promise<PresencePage> {
    const q = new URLSearchParams();
    if (options.after !== undefined) q.set('after', options.after);
    if (options.limit !== undefined) q.set('limit', String(options.limit));
    return this.getJson(`/v1/topics/${encodeURIComponent(topic)}/presence?${q}`, options.signal);
  }

  /** How many are on `topic`: members, and streams of anonymous subscribers. */
  async presenceCount(
    topic: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ topic: string; count: number; anonymous: number }> {
    return this.getJson(`/v1/topics/${encodeURIComponent(topic)}/presence/count`, options.signal);
  }

  private async getJson<R>(path: string, signal: AbortSignal | undefined): Promise<R> {
    let res: Response;
    try {
      res = await this.request(path, { signal });
    } catch (e) {
      throw networkError(e, signal, this.url);
    }
    if (!res.ok) throw settleAuth(await fromResponse(res), this.tokens);
    return (await res.json()) as R;
  }

  /**
   * One request with the client's headers and token. Refused as `token_expired` while a new
   * token can be had, it is sent once more with a new one.
   */
  private async request(path: string, init: RequestInit, again = true): Promise<Response> {
    const token = await this.tokens.get();
    const headers = withToken(
      { ...(await this.headers()), ...(init.headers as Record<string, string>) },
      token,
    );
    const res = await (this.o.fetch ?? fetch)(this.url + path, { ...init, headers });
    if (res.status === 401 && again && token !== undefined && this.tokens.renewable) {
      if ((await fromResponse(res.clone())).code === 'token_expired') {
        this.tokens.expired(token);
        return this.request(path, init, false);
      }
    }
    return res;
  }

  /**
   * Obtains a new token from the `token` function now and sends it on the open WebSocket (after
   * a sign-in as someone else, say). Nothing happens with a fixed token.
   */
  async refreshToken(): Promise<void> {
    await this.tokens.refresh();
  }

  /** Closes every subscription of this client. */
  close(): void {
    for (const s of [...this.subs]) s.close();
  }
}

export type { Transport };
