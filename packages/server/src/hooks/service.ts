import { Grants, type Identity } from '../auth/index.js';
import { RillError } from '../model/errors.js';
import { isPattern, patternCovers } from '../model/topic.js';
import { callHook, HookFailure, type FetchLike, type HookDecision } from './client.js';
import {
  HOOK_NAMES,
  HOOK_OUTCOMES,
  type HookName,
  type HookOutcome,
  type HookSettings,
} from './settings.js';

/** Where a request comes from, as a hook is told. */
export interface HookClientInfo {
  /** The client's address (behind trusted proxies, the one they name). */
  address: string;
  transport: 'sse' | 'ndjson' | 'ws' | 'poll' | 'http';
  /** The connection's id (`reqId` in the log, the id in `GET /v1/connections`). */
  connection?: string;
}

/** What a publish hook is told of a publish: never the events' data. */
export interface PublishSummary {
  /** Events in the request (a WebSocket publish: 1). */
  events: number;
  /** Bytes of the request body (a WebSocket publish: of its message). */
  bytes: number;
  /** The distinct event types, at most {@link MAX_SUMMARY_TYPES}. */
  types: string[];
  ephemeral: boolean;
}

/** Most event types a publish hook is told of. */
export const MAX_SUMMARY_TYPES = 16;

/** A connect hook's allowing decision (with its enrichment), or null when nothing was asked. */
export type ConnectDecision = Extract<HookDecision, { allow: true }> | null;

/** Calls by hook and outcome, and each call's duration for the histogram (metrics). */
export class HookMeter {
  readonly calls = Object.fromEntries(
    HOOK_NAMES.map((h) => [h, Object.fromEntries(HOOK_OUTCOMES.map((o) => [o, 0]))]),
  ) as Record<HookName, Record<HookOutcome, number>>;
  /** Decisions taken from a cache instead of a call, by hook. */
  readonly cached = Object.fromEntries(HOOK_NAMES.map((h) => [h, 0])) as Record<HookName, number>;
  /** Called with each call's duration in seconds, when metrics are on. */
  onDuration: ((hook: HookName, seconds: number) => void) | null = null;
}

/** Decisions one connection keeps: subscribe, per topic or pattern (bounded). */
export class HookSession {
  /** Topic or pattern → the decision, or the call in flight (a failure is not kept). */
  readonly subscribe = new Map<string, Promise<HookDecision | null>>();
}

/** Most subscribe decisions one connection keeps; past it, topics are asked again. */
const MAX_SESSION_DECISIONS = 1000;
/** Most decisions the shared cache (`cacheTtl`) keeps; the oldest go first. */
const MAX_SHARED_DECISIONS = 10_000;
/** A failing hook is logged at most this often. */
const FAILURE_LOG_EVERY_MS = 10_000;

export interface HookLog {
  warn(obj: object, msg: string): void;
}

/**
 * A connection's grants narrowed by a connect hook: allowed only where both the identity's own
 * grants and the hook's patterns allow. Admin routes are not hooked, so `admin` stays as it was.
 */
class NarrowedGrants extends Grants {
  constructor(
    base: Grants,
    private readonly onlySubscribe: readonly string[] | undefined,
    private readonly onlyPublish: readonly string[] | undefined,
  ) {
    super(base.toJSON());
  }

  override canPublish(topic: string): boolean {
    return super.canPublish(topic) && within(this.onlyPublish, topic);
  }

  override canRead(topic: string): boolean {
    return super.canRead(topic) && within(this.onlySubscribe, topic);
  }

  override canSubscribe(topicOrPattern: string): boolean {
    return super.canSubscribe(topicOrPattern) && within(this.onlySubscribe, topicOrPattern);
  }
}

function within(patterns: readonly string[] | undefined, topic: string): boolean {
  return patterns === undefined || patterns.some((p) => patternCovers(p, topic));
}

/**
 * The identity a connection acts as once its connect hook allowed it: the hook's `info` replaces
 * the token's (presence lists it), its `subscribe` and `publish` narrow the grants. The identity
 * object itself is never changed (the authenticator keeps verified ones).
 */
export function applyConnect(identity: Identity, decision: ConnectDecision): Identity {
  if (decision === null) return identity;
  const { info, subscribe, publish } = decision;
  if (info === undefined && subscribe === undefined && publish === undefined) return identity;
  return {
    ...identity,
    ...(info === undefined ? {} : { info }),
    ...(subscribe === undefined && publish === undefined
      ? {}
      : { grants: new NarrowedGrants(identity.grants, subscribe, publish) }),
  };
}

/**
 * The backend hooks (docs/protocol.md § Backend hooks): asks the application's backend whether a
 * connection, a subscription or a publish may go ahead, over HTTP with a timeout and a signature,
 * and turns its answer into a decision: allowed (a connect hook may add `info` and narrow the
 * grants), `hook_denied`, or, when there is no answer, what `failurePolicy` says (`deny`:
 * `hook_unavailable`). Decisions are kept where that is safe: a connection's subscribe decisions
 * per topic for its life (a {@link HookSession}), and with `cacheTtl` publish decisions and a
 * long-poll's connect and subscribe decisions per credential, address and topic.
 */
export class Hooks {
  readonly meter = new HookMeter();
  private readonly secrets: string[];
  private readonly shared = new Map<string, { decision: HookDecision; until: number }>();
  private readonly lastFailureLog: Record<HookName, number> = {
    connect: 0,
    subscribe: 0,
    publish: 0,
  };

  constructor(
    private readonly settings: HookSettings,
    private readonly options: { log?: HookLog; fetch?: FetchLike } = {},
  ) {
    this.secrets = [
      ...(settings.secret === undefined ? [] : [settings.secret]),
      ...(settings.secrets ?? []),
    ];
    if (this.secrets.length === 0) throw new Error('hooks: a secret is needed to sign requests');
  }

  /** Whether `hook` is configured. */
  has(hook: HookName): boolean {
    return this.settings[hook] !== undefined;
  }

  /**
   * Asks the connect hook about a new connection of `identity` (a stream or a WebSocket names the
   * topics it opens with; a WebSocket connecting names none). Resolves with the identity the
   * connection acts as and the decision behind it (to apply again after a token refresh); throws
   * `hook_denied` or `hook_unavailable`. `shared`: a long-poll, whose decisions `cacheTtl` keeps.
   */
  async connect(
    identity: Identity,
    client: HookClientInfo,
    topics: readonly string[],
    shared = false,
  ): Promise<{ identity: Identity; decision: ConnectDecision }> {
    if (!this.has('connect')) return { identity, decision: null };
    const body = { topics };
    const decision = shared
      ? await this.sharedDecision('connect', identity, client, topics.join('\n'), body)
      : await this.decide('connect', identity, client, body);
    if (decision === null) return { identity, decision: null };
    if (!decision.allow) throw denied('connect', decision.reason);
    return { identity: applyConnect(identity, decision), decision };
  }

  /**
   * Asks the subscribe hook about each of `patterns` not yet decided on this connection (in
   * parallel, once per topic or pattern); throws `hook_denied` for the first refused, or
   * `hook_unavailable`. Without a session (a long-poll), `cacheTtl` decides what is kept.
   */
  async subscribe(
    identity: Identity,
    client: HookClientInfo,
    patterns: readonly string[],
    session: HookSession | null,
  ): Promise<void> {
    if (!this.has('subscribe')) return;
    const answers = await Promise.all(
      patterns.map(async (topic) => ({
        topic,
        decision: await this.subscribeOne(identity, client, topic, session),
      })),
    );
    for (const { topic, decision } of answers) {
      if (decision !== null && !decision.allow) throw denied('subscribe', decision.reason, topic);
    }
  }

  /** Asks the publish hook about one publish request; throws `hook_denied` or `hook_unavailable`. */
  async publish(
    identity: Identity,
    client: HookClientInfo,
    topic: string,
    summary: PublishSummary,
  ): Promise<void> {
    if (!this.has('publish')) return;
    const body = { topic, publish: summary };
    const decision = await this.sharedDecision('publish', identity, client, topic, body);
    if (decision !== null && !decision.allow) throw denied('publish', decision.reason, topic);
  }

  private subscribeOne(
    identity: Identity,
    client: HookClientInfo,
    topic: string,
    session: HookSession | null,
  ): Promise<HookDecision | null> {
    const body = { topic, pattern: isPattern(topic) };
    if (session === null) return this.sharedDecision('subscribe', identity, client, topic, body);
    const known = session.subscribe.get(topic);
    if (known !== undefined) {
      this.meter.cached.subscribe++;
      return known;
    }
    const asked = this.decide('subscribe', identity, client, body);
    if (session.subscribe.size < MAX_SESSION_DECISIONS) {
      session.subscribe.set(topic, asked);
      // No answer (the failure policy allowed it) is not a decision: ask again next time.
      asked.then(
        (d) => {
          if (d === null && session.subscribe.get(topic) === asked) session.subscribe.delete(topic);
        },
        () => {
          if (session.subscribe.get(topic) === asked) session.subscribe.delete(topic);
        },
      );
    }
    return asked;
  }

  /** A decision kept for `cacheTtl` per credential, address and `what`, or asked for. */
  private async sharedDecision(
    hook: HookName,
    identity: Identity,
    client: HookClientInfo,
    what: string,
    body: Record<string, unknown>,
  ): Promise<HookDecision | null> {
    const ttl = this.settings.cacheTtl;
    if (ttl <= 0) return this.decide(hook, identity, client, body);
    const key = `${hook}\u0000${identity.credentialId}\u0000${client.address}\u0000${what}`;
    const now = Date.now();
    const kept = this.shared.get(key);
    if (kept !== undefined && kept.until > now) {
      this.meter.cached[hook]++;
      return kept.decision;
    }
    const decision = await this.decide(hook, identity, client, body);
    if (decision !== null) {
      this.shared.delete(key);
      if (this.shared.size >= MAX_SHARED_DECISIONS) {
        this.shared.delete(this.shared.keys().next().value as string);
      }
      this.shared.set(key, { decision, until: Date.now() + ttl });
    }
    return decision;
  }

  /**
   * One call: the decision, or null when there was none and the failure policy allows; throws
   * `hook_unavailable` when it denies.
   */
  private async decide(
    hook: HookName,
    identity: Identity,
    client: HookClientInfo,
    extra: Record<string, unknown>,
  ): Promise<HookDecision | null> {
    const url = this.settings[hook]!.url;
    const body = JSON.stringify({
      hook,
      time: Date.now(),
      identity: {
        kind: identity.kind,
        sub: identity.sub,
        key: identity.kind === 'apiKey' ? (identity.name ?? null) : null,
        ...(identity.info === undefined ? {} : { info: identity.info }),
      },
      client,
      ...extra,
    });
    const t0 = performance.now();
    let outcome: HookOutcome = 'error';
    try {
      const decision = await callHook(
        url,
        hook,
        body,
        this.secrets,
        this.settings.timeout,
        this.options.fetch,
      );
      outcome = decision.allow ? 'allow' : 'deny';
      return decision;
    } catch (err) {
      const failure =
        err instanceof HookFailure ? err : new HookFailure('error', String(err), { cause: err });
      outcome = failure.kind;
      this.logFailure(hook, failure);
      if (this.settings.failurePolicy === 'allow') return null;
      throw new RillError('hook_unavailable', `The ${hook} hook failed: ${failure.message}`, {
        details: { hook },
      });
    } finally {
      this.meter.calls[hook][outcome]++;
      this.meter.onDuration?.(hook, (performance.now() - t0) / 1000);
    }
  }

  private logFailure(hook: HookName, failure: HookFailure): void {
    const now = Date.now();
    if (now - this.lastFailureLog[hook] < FAILURE_LOG_EVERY_MS) return;
    this.lastFailureLog[hook] = now;
    this.options.log?.warn(
      { hook, kind: failure.kind, error: failure.message, policy: this.settings.failurePolicy },
      `hooks: the ${hook} hook gave no decision; failurePolicy ${this.settings.failurePolicy} applies`,
    );
  }
}

/** `hook_denied` for `hook`, with the backend's reason and the topic when there is one. */
function denied(hook: HookName, reason: string | undefined, topic?: string): RillError {
  const what = topic === undefined ? '' : ` (${topic})`;
  return new RillError(
    'hook_denied',
    reason === undefined
      ? `Refused by the application's ${hook} hook${what}`
      : `Refused by the application's ${hook} hook${what}: ${reason}`,
    {
      details: {
        hook,
        ...(topic === undefined ? {} : { topic }),
        ...(reason === undefined ? {} : { reason }),
      },
    },
  );
}

/** What a publish hook is told of validated events. */
export function summarize(
  inputs: readonly { type?: string | undefined; ephemeral?: boolean | undefined }[],
  bytes: number,
): PublishSummary {
  const types = new Set<string>();
  for (const i of inputs) {
    if (i.type !== undefined && types.size < MAX_SUMMARY_TYPES) types.add(i.type);
  }
  return {
    events: inputs.length,
    bytes,
    types: [...types],
    ephemeral: inputs.length > 0 && inputs.every((i) => i.ephemeral === true),
  };
}
