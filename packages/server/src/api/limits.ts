import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyRequest } from 'fastify';
import type { Identity } from '../auth/index.js';
import type { ClientAddresses, KnownTopics, Lease, Limiter, Subject } from '../limits/index.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Bytes of the publish body as received (set by the body parsers). */
    bodyBytes: number;
    /** Who a publish counts for (set before its body is read when limits are on). */
    limitSubjects: readonly Subject[] | null;
  }
}

const NO_SUBJECTS: readonly Subject[] = Object.freeze([]);

/**
 * The rate and count limits as the routes use them (docs/limits.md): who a request counts for
 * (its key or user, and its client address), and the topic-creation check. Every call is local:
 * the shared limits exchange in the background.
 */
export class RequestLimits {
  constructor(
    readonly limiter: Limiter,
    readonly addresses: ClientAddresses,
    private readonly topics: KnownTopics,
  ) {}

  get enabled(): boolean {
    return this.limiter.enabled;
  }

  /** The client address of a request or handshake (trusted proxies' headers considered). */
  address(peer: string | undefined, headers: IncomingHttpHeaders): string | null {
    return this.addresses.resolve(peer, headers);
  }

  /** Who something done by `identity` from `address` counts for; empty when limits are off. */
  subjects(identity: Identity, address: string | null): readonly Subject[] {
    if (!this.limiter.enabled) return NO_SUBJECTS;
    return this.limiter.subjectsOf(
      identity,
      address,
      address === null || this.addresses.isExempt(address),
    );
  }

  /** {@link subjects} of an HTTP request. */
  ofRequest(req: FastifyRequest, identity: Identity): readonly Subject[] {
    if (!this.limiter.enabled) return NO_SUBJECTS;
    return this.subjects(identity, this.address(req.raw.socket?.remoteAddress, req.headers));
  }

  /** Opens a stream with its subscription (SSE, NDJSON, long-poll), or throws `rate_limited`. */
  openStream(subjects: readonly Subject[]): Lease | null {
    if (subjects.length === 0) return null;
    return this.limiter.open(subjects, { connection: true, subscription: true });
  }

  /**
   * Before a publish to `topic`: when the topic does not exist yet, counts its creation (or
   * throws `rate_limited`). A known topic costs one lookup.
   */
  checkTopic(topic: string, subjects: readonly Subject[]): Promise<void> | null {
    if (subjects.length === 0 || this.topics.has(topic)) return null;
    return this.topics.exists(topic).then((exists) => {
      if (!exists) this.limiter.createTopic(subjects);
    });
  }

  /**
   * Opens a WebSocket connection for `subjects` (`connections`, `connectionsPerSecond`), or
   * throws `rate_limited`.
   */
  openConnection(subjects: readonly Subject[]): Lease | null {
    if (subjects.length === 0) return null;
    return this.limiter.open(subjects, { connection: true, subscription: false });
  }

  /** Opens one WebSocket subscription for `subjects`, or throws `rate_limited`. */
  openSubscription(subjects: readonly Subject[]): Lease | null {
    if (subjects.length === 0) return null;
    return this.limiter.open(subjects, { connection: false, subscription: true });
  }

  /** `topic` now exists. */
  published(topic: string): void {
    this.topics.add(topic);
  }
}
