import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_MAX_CURSOR_LENGTH, DEFAULT_MAX_CURSOR_TOPICS } from './model/cursor.js';
import { DEFAULT_IDEMPOTENCY_WINDOW_MS, DEFAULT_RETENTION } from './engine/engine.js';
import {
  ApiKeyEntrySchema,
  authConfigured,
  isHmacAlgorithm,
  JWT_ALGORITHMS,
  MIN_SECRET_BYTES,
} from './model/credentials.js';
import { DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_JSON_DEPTH } from './model/event.js';
import { isHostPattern } from './model/host.js';
import { isValidPattern } from './model/topic.js';

/**
 * Configuration: defaults, then a file (JSON or YAML), then `RILL_*` environment variables, then
 * command-line flags, resolved into one typed object and validated once at start-up. Unknown keys
 * are rejected with a message naming the key.
 */

const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };
const UNITS_BYTES: Record<string, number> = {
  b: 1,
  kb: 1000,
  kib: 1024,
  mb: 1_000_000,
  mib: 1024 * 1024,
  gb: 1_000_000_000,
  gib: 1024 ** 3,
};

function withUnits(units: Record<string, number>, what: string) {
  return z.union([z.number(), z.string()]).transform((v, ctx) => {
    if (typeof v === 'number') return v;
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
    const unit = (m?.[2] ?? '').toLowerCase() || Object.keys(units)[0]!;
    const mult = units[unit];
    if (!m || mult === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `expected a ${what} such as ${what === 'duration' ? '"15s", "500ms", "7d"' : '"64KiB", "1MiB"'} or a number`,
      });
      return z.NEVER;
    }
    return Math.round(Number(m[1]) * mult);
  });
}

const duration = withUnits(UNITS_MS, 'duration').pipe(z.number().int().min(0));

/** A duration as the config takes it (`"15s"`, `"1h"`, `"500ms"`, a number of ms) in ms. */
export function parseDuration(value: string | number): number {
  const r = duration.safeParse(value);
  if (!r.success) throw new ConfigError(`${JSON.stringify(value)}: ${r.error.issues[0]?.message}`);
  return r.data;
}
const bytes = withUnits(UNITS_BYTES, 'size').pipe(z.number().int().min(0));
const pattern = z
  .string()
  .refine(isValidPattern, { message: 'expected a topic or pattern such as "logs.>"' });

const RetentionRuleSchema = z.strictObject({
  pattern,
  maxEvents: z.number().int().min(0).optional(),
  maxAge: duration.optional(),
  maxBytes: bytes.optional(),
});

/** A shared JWT secret: long enough that it cannot be guessed from a token it signed. */
const jwtSecret = z.string().refine((s) => Buffer.byteLength(s) >= MIN_SECRET_BYTES, {
  message: `must be at least ${MIN_SECRET_BYTES} bytes (\`openssl rand -base64 32\` makes one)`,
});

/** Keys are fetched over TLS: a JWKS read over plain HTTP could be swapped for an attacker's. */
function isJwksUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (
      u.protocol === 'https:' ||
      (u.protocol === 'http:' && isLoopback(u.hostname.replace(/^\[|\]$/g, '')))
    );
  } catch {
    return false;
  }
}

function isPublicKeyPem(s: string): boolean {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(s)) return false;
  try {
    createPublicKey(s);
    return true;
  } catch {
    return false;
  }
}

const KEY_SOURCES = ['secret', 'publicKey', 'publicKeyFile', 'jwksUrl'] as const;

/** One JWT verification key: a secret, a PEM public key (inline or a file) or a JWKS URL. */
const JwtKeySchema = z
  .strictObject({
    /** Matched against the token header's `kid`; optional for the one key without. */
    kid: z.string().min(1).max(256).optional(),
    /** Algorithms the key accepts (never from the token). Default from the key; required for a JWKS. */
    algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).optional(),
    secret: jwtSecret.optional(),
    publicKey: z
      .string()
      .refine(isPublicKeyPem, {
        message: 'expected a PEM public key (SPKI, PKCS#1 or a certificate)',
      })
      .optional(),
    publicKeyFile: z.string().min(1).optional(),
    jwksUrl: z
      .string()
      .refine(isJwksUrl, { message: 'expected an https:// URL (http:// only on a loopback host)' })
      .optional(),
  })
  .superRefine((k, ctx) => {
    const given = KEY_SOURCES.filter((n) => k[n] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          given.length === 0
            ? `give one of ${KEY_SOURCES.join(', ')}`
            : `give only one of ${given.join(', ')}`,
      });
    }
    const hmac = k.algorithms?.filter(isHmacAlgorithm) ?? [];
    if (k.secret !== undefined && hmac.length !== (k.algorithms?.length ?? 0)) {
      ctx.addIssue({
        code: 'custom',
        message: 'a secret allows HS256, HS384 and HS512 only',
        path: ['algorithms'],
      });
    } else if (k.secret === undefined && hmac.length > 0) {
      ctx.addIssue({
        code: 'custom',
        message: `${hmac.join(', ')} need${hmac.length === 1 ? 's' : ''} a secret, not a public key`,
        path: ['algorithms'],
      });
    }
    if (k.jwksUrl !== undefined && k.algorithms === undefined) {
      ctx.addIssue({ code: 'custom', message: 'required with jwksUrl', path: ['algorithms'] });
    }
  });

const audienceOrIssuer = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

const JwtSchema = z
  .strictObject({
    /** Shortcut: one HS256 key without a kid. */
    secret: jwtSecret.optional(),
    keys: z.array(JwtKeySchema).default([]),
    /** Checked when set: the token's `aud` names one of these. */
    audience: audienceOrIssuer.optional(),
    /** Checked when set: the token's `iss` is one of these. */
    issuer: audienceOrIssuer.optional(),
    /** Longest `exp - (iat ?? now)` accepted. */
    maxLifetime: duration.pipe(z.number().min(1000)).default(24 * 3600_000),
    /** Allowance on `exp`, `nbf`, `iat` for clocks that disagree. */
    clockSkew: duration.default(30_000),
    /** How often each JWKS is fetched again (and on SIGHUP). */
    jwksRefresh: duration.pipe(z.number().min(1000)).default(60_000),
  })
  .superRefine((j, ctx) => {
    if (j.secret === undefined && j.keys.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'set secret or keys' });
    }
    const kids = new Set<string>();
    let kidless = j.secret === undefined ? 0 : 1;
    j.keys.forEach((k, i) => {
      if (k.kid !== undefined) {
        if (kids.has(k.kid)) {
          ctx.addIssue({
            code: 'custom',
            message: `kid ${JSON.stringify(k.kid)} is used twice`,
            path: ['keys', i, 'kid'],
          });
        }
        kids.add(k.kid);
      } else if (k.jwksUrl === undefined && ++kidless > 1) {
        ctx.addIssue({
          code: 'custom',
          message: 'required: only one key may go without a kid',
          path: ['keys', i, 'kid'],
        });
      }
    });
  });

const AuthSchema = z
  .strictObject({
    jwt: JwtSchema.optional(),
    /** API keys by hash (`rill keys add` prints an entry). */
    apiKeys: z.array(ApiKeyEntrySchema).optional(),
    /** A YAML or JSON list of the same entries; watched and reloaded. */
    apiKeysFile: z.string().min(1).optional(),
    /** What a request without credentials may do; refused without this. */
    anonymous: z
      .strictObject({
        subscribe: z.array(pattern).default([]),
        publish: z.array(pattern).default([]),
      })
      .optional(),
    /** Cookie a token is read from (same-site apps); none is read when unset. */
    cookie: z
      .string()
      .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/, { message: 'expected a cookie name' })
      .optional(),
    /** Deadline for the first WebSocket `auth` message when the upgrade had no token. */
    wsAuthTimeout: duration.pipe(z.number().min(100)).default(10_000),
    /** How long before `exp` a WebSocket is sent `token_expiring`. */
    expiryWarning: duration.default(30_000),
  })
  .superRefine((a, ctx) => {
    const names = new Set<string>();
    a.apiKeys?.forEach((k, i) => {
      if (names.has(k.name)) {
        ctx.addIssue({
          code: 'custom',
          message: `API key name ${JSON.stringify(k.name)} is used twice`,
          path: ['apiKeys', i, 'name'],
        });
      }
      names.add(k.name);
    });
  });

/**
 * The certificate chain and private key of a TLS listener, read and checked: both files readable,
 * the certificate and the key parseable PEM, and the key the certificate's. Used at start-up (as
 * part of validating the config) and on every reload, so a bad pair is refused with the same words
 * either way.
 */
export interface TlsPair {
  cert: Buffer;
  key: Buffer;
  /** SHA-256 fingerprint of the leaf certificate (as `openssl x509 -fingerprint -sha256` prints it). */
  fingerprint: string;
  /** When the leaf certificate expires (its `notAfter`). */
  validTo: string;
}

/** A problem with one of the TLS files; `key` names the config key (`cert` or `key`). */
export class TlsFileError extends Error {
  override name = 'TlsFileError';
  constructor(
    readonly key: 'cert' | 'key',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Reads and checks the PEM files at `paths`; throws {@link TlsFileError} naming the bad one (its
 * message leaves the path to the caller, which knows it).
 */
export function readTlsPair(paths: { cert: string; key: string }): TlsPair {
  const read = (which: 'cert' | 'key'): Buffer => {
    try {
      return readFileSync(paths[which]);
    } catch (err) {
      throw new TlsFileError(which, `cannot read it: ${(err as Error).message}`);
    }
  };
  const cert = read('cert');
  const key = read('key');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new TlsFileError('cert', `not a PEM certificate (${(err as Error).message})`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new TlsFileError('key', `not an unencrypted PEM private key (${(err as Error).message})`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TlsFileError('key', 'not the private key of the certificate in tls.cert');
  }
  try {
    // What the listener will do with them: whatever OpenSSL refuses is refused here.
    createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsFileError('cert', `cannot be used (${(err as Error).message})`);
  }
  return { cert, key, fingerprint: leaf.fingerprint256, validTo: leaf.validTo };
}

const LogLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
export type LogLevel = z.infer<typeof LogLevelSchema>;

/** The parts of the server whose log level can be set on its own (`log.levels`). */
export const LOG_COMPONENTS = ['http', 'ws', 'engine', 'auth', 'fanout'] as const;
export type LogComponent = (typeof LOG_COMPONENTS)[number];

const TlsSchema = z
  .strictObject({
    /** PEM file: the server certificate, then any intermediates. */
    cert: z.string().min(1).optional(),
    /** PEM file: the certificate's private key (unencrypted). */
    key: z.string().min(1).optional(),
  })
  .superRefine((t, ctx) => {
    if (t.cert === undefined && t.key === undefined) return;
    if (t.cert === undefined || t.key === undefined) {
      const missing = t.cert === undefined ? 'cert' : 'key';
      ctx.addIssue({
        code: 'custom',
        path: [missing],
        message: `required with tls.${missing === 'cert' ? 'key' : 'cert'} (give both or neither)`,
      });
      return;
    }
    try {
      readTlsPair({ cert: t.cert, key: t.key });
    } catch (err) {
      if (!(err instanceof TlsFileError)) throw err;
      ctx.addIssue({ code: 'custom', path: [err.key], message: err.message });
    }
  });

export const ConfigSchema = z
  .strictObject({
    /** Address to bind. Non-loopback addresses need `insecure: true` until auth is configured. */
    host: z.string().min(1).default('127.0.0.1'),
    port: z.coerce.number().int().min(0).max(65535).default(8080),
    engine: z.enum(['memory', 'lmdb', 'redis', 'nats']).default('lmdb'),
    /** Directory of the lmdb engine's files. */
    dataDir: z.string().min(1).default('./data'),
    /** The redis engine: where Redis is, and the prefix of every key and channel. */
    redis: z
      .strictObject({
        url: z
          .string()
          .regex(/^rediss?:\/\//, { message: 'expected a redis:// or rediss:// URL' })
          .default('redis://127.0.0.1:6379'),
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9_.:-]{1,64}$/, {
            message: 'expected 1-64 characters of [A-Za-z0-9_.:-]',
          })
          .default('rill'),
      })
      .prefault({}),
    /** The nats engine: the servers, the prefix of every stream and subject, stream replicas. */
    nats: z
      .strictObject({
        url: z
          .string()
          .regex(/^(nats|tls):\/\/[^,]+(,(nats|tls):\/\/[^,]+)*$/, {
            message: 'expected nats://host:port (comma-separated for several servers)',
          })
          .default('nats://127.0.0.1:4222'),
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9_-]{1,32}$/, { message: 'expected 1-32 characters of [A-Za-z0-9_-]' })
          .default('rill'),
        replicas: z.number().int().min(1).max(5).default(1),
      })
      .prefault({}),
    /** Publish a random integer 0-99 to `demo.random` every 100 ms. */
    demo: z.boolean().default(false),
    /** Allow binding a non-loopback address although no authentication is configured. */
    insecure: z.boolean().default(false),
    /** The level of every log line, unless `log.levels` sets its component's. */
    logLevel: LogLevelSchema.default('info'),
    log: z
      .strictObject({
        /**
         * A level per component (`http`, `ws`, `engine`, `auth`, `fanout`), over `logLevel`:
         * `{ ws: 'debug', http: 'warn' }`.
         */
        levels: z
          .strictObject(
            Object.fromEntries(LOG_COMPONENTS.map((c) => [c, LogLevelSchema.optional()])) as Record<
              LogComponent,
              z.ZodOptional<typeof LogLevelSchema>
            >,
          )
          .prefault({}),
        /**
         * Human-readable lines (pino-pretty) instead of JSON; by default when standard output is
         * a terminal.
         */
        pretty: z.boolean().optional(),
      })
      .prefault({}),
    /** Longest time a graceful shutdown waits for in-flight requests before closing anyway. */
    shutdownTimeout: duration.default(10_000),
    retention: z
      .strictObject({
        maxEvents: z.number().int().min(0).default(DEFAULT_RETENTION.maxEvents),
        maxAge: duration.default(DEFAULT_RETENTION.maxAgeMs),
        /** Bytes of events (data, type and key) kept per topic; 0 = no limit. */
        maxBytes: bytes.default(0),
        rules: z.array(RetentionRuleSchema).max(1000).default([]),
      })
      .prefault({}),
    /** The whole store. */
    storage: z
      .strictObject({
        /**
         * Bytes of events kept over every topic (memory and lmdb engines; 0 = no limit). A publish
         * that would go past it gets `507 insufficient_storage`. Redis and JetStream have budgets of
         * their own (`maxmemory`, storage limits), so the broker engines refuse this key.
         */
        maxBytes: bytes.default(0),
      })
      .prefault({}),
    /**
     * Who is subscribed to a topic (docs/protocol.md § Presence). Shared by every node with the
     * redis and nats engines, per worker process with memory and lmdb.
     */
    presence: z
      .strictObject({
        enabled: z.boolean().default(true),
        /**
         * How long a subscriber whose last connection closed stays present: a reconnect within it
         * is neither a leave nor a join.
         */
        grace: duration.default(5_000),
        /**
         * Redis and nats engines: each node refreshes its liveness every third of this; the
         * members of a node that stopped (killed, cut off) are gone from every answer within it and a
         * third of it more.
         */
        ttl: duration.pipe(z.number().int().min(1_000)).default(15_000),
      })
      .prefault({}),
    /** How long an idempotency key is remembered. */
    idempotencyWindow: duration.default(DEFAULT_IDEMPOTENCY_WINDOW_MS),
    limits: z
      .strictObject({
        /** Largest event: data JSON + type + key. */
        maxEventBytes: bytes.default(DEFAULT_MAX_EVENT_BYTES),
        /** Deepest nesting of arrays and objects in an event's data. */
        maxJsonDepth: z.number().int().min(1).max(1000).default(DEFAULT_MAX_JSON_DEPTH),
        /** Most events in one publish request. */
        maxBatchEvents: z.number().int().min(1).default(10_000),
        /** Largest publish request body. */
        maxBodyBytes: bytes.default(8 * 1024 * 1024),
        /**
         * Bytes a subscriber may have waiting in its socket before it leaves the live path and
         * catches up from the log.
         */
        maxSubscriberBufferBytes: bytes.default(1024 * 1024),
        /** Most events one replay step reads from the log. */
        replayBatch: z.number().int().min(1).max(10_000).default(1000),
        /** Most topics (after pattern expansion) in one subscription. */
        maxTopicsPerSubscription: z.number().int().min(1).default(1000),
        /** Most patterns or topics named in one subscribe request. */
        maxPatternsPerSubscription: z.number().int().min(1).default(100),
        /** Longest cursor accepted (Last-Event-ID, lastEventId, cursor). */
        maxCursorLength: z.number().int().min(64).default(DEFAULT_MAX_CURSOR_LENGTH),
        /** Most topics listed in a multi-topic SSE id before the watermark covers the rest. */
        maxCursorTopics: z.number().int().min(1).default(DEFAULT_MAX_CURSOR_TOPICS),
        /** Largest page of history one GET returns. */
        maxPageSize: z.number().int().min(1).max(10_000).default(1000),
      })
      .prefault({}),
    http: z
      .strictObject({
        /** Largest request head (all headers), bytes; Node's `maxHeaderSize`. */
        maxHeaderSize: bytes.default(16 * 1024),
        /** Most request headers; Node's `maxHeadersCount`. */
        maxHeadersCount: z.number().int().min(8).default(100),
        /**
         * Origins of other sites' pages that may use this server: exact origins such as
         * `https://app.example.com`, or `*`. They get CORS on HTTP (api/cors.ts) and may open a
         * WebSocket. Handshakes without an `Origin` header (non-browser clients) and same-origin
         * ones are always allowed; with an empty list no `Access-Control-*` header is sent.
         */
        allowedOrigins: z.array(z.string().min(1)).default([]),
        /**
         * `Host` names served besides `localhost`, IP addresses and the bound `host`: names
         * (`rill.example.com`), `.example.com` for a domain and its subdomains, or `*` for any (a
         * proxy in front checks it). Other names get 421 `host_not_allowed` (DNS rebinding).
         */
        allowedHosts: z
          .preprocess(
            (v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()) : v),
            z.array(
              z.string().refine(isHostPattern, {
                message: 'expected a host name such as "rill.example.com", ".example.com" or "*"',
              }),
            ),
          )
          .default([]),
        /** Longest time to receive a whole request, head and body (0 = none). Not the response. */
        requestTimeout: duration.default(60_000),
        /** Longest time to receive a request head (0 = none); at most `requestTimeout`. */
        headersTimeout: duration.default(10_000),
        /** How long an idle keep-alive connection stays open; above any proxy's upstream idle time. */
        keepAliveTimeout: duration.default(72_000),
        /** gzip SSE and NDJSON streams for clients that accept it (flushed per write batch). */
        compression: z.boolean().default(false),
      })
      .refine((h) => h.requestTimeout === 0 || h.headersTimeout <= h.requestTimeout, {
        message: 'headersTimeout must not exceed requestTimeout',
        path: ['headersTimeout'],
      })
      .prefault({}),
    ws: z
      .strictObject({
        /** Largest WebSocket message (after reassembly and decompression), bytes. */
        maxPayload: bytes.default(1024 * 1024),
        /** Most subscriptions on one socket. */
        maxSubscriptions: z.number().int().min(1).default(100),
        /** Protocol ping interval; a peer silent for `pingTimeout` after a ping is terminated. */
        pingInterval: duration.pipe(z.number().min(100)).default(30_000),
        pingTimeout: duration.pipe(z.number().min(100)).default(10_000),
        /** Negotiate permessage-deflate with clients that offer it. */
        perMessageDeflate: z.boolean().default(false),
      })
      .prefault({}),
    sse: z
      .strictObject({
        /** Comment line sent on an idle stream so proxies and clients know it is alive. */
        heartbeat: duration.pipe(z.number().min(100)).default(15_000),
        /** Reconnect delay suggested to EventSource clients (`retry:`). */
        retry: duration.default(2000),
      })
      .prefault({}),
    /**
     * Authentication: JWTs, API keys, what anonymous requests may do. On when any of `jwt`,
     * `apiKeys`, `apiKeysFile` or `anonymous` is set ({@link authEnabled}).
     */
    auth: AuthSchema.prefault({}),
    /**
     * Serve HTTPS (HTTP/2 with HTTP/1.1 fallback) with this certificate and key; plain HTTP when
     * neither is set. Reloaded on SIGHUP.
     */
    tls: TlsSchema.prefault({}),
  })
  .superRefine((c, ctx) => {
    if (c.storage.maxBytes > 0 && (c.engine === 'redis' || c.engine === 'nats')) {
      ctx.addIssue({
        code: 'custom',
        path: ['storage', 'maxBytes'],
        message:
          c.engine === 'redis'
            ? "the redis engine's budget is Redis' own maxmemory (with maxmemory-policy noeviction): set it there"
            : "the nats engine's budget is JetStream's (max_file_store, account or stream limits): set it there",
      });
    }
  });

/** The resolved configuration. Durations are in ms, sizes in bytes. */
export type RillConfig = z.output<typeof ConfigSchema>;
/** What a config file, the environment or `createServer` may give; everything optional. */
export type RillConfigInput = z.input<typeof ConfigSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Whether the configuration turns authentication on (any credential source in `auth`). */
export function authEnabled(config: RillConfig): boolean {
  return authConfigured(config.auth);
}

/** Keys whose values never appear in an error message. */
const SECRET_KEYS = new Set(['secret']);

/** Validates and fills defaults. Throws ConfigError with one line per problem. */
export function resolveConfig(input: unknown): RillConfig {
  const r = ConfigSchema.safeParse(input ?? {});
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      const key = i.path.join('.') || '(root)';
      if (i.code === 'unrecognized_keys') {
        return `${key === '(root)' ? '' : key + ': '}unknown key(s) ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
      }
      const path = i.path.map(String);
      const form = i.code === 'custom' ? undefined : expectedForm(path);
      // A plain value is echoed; a secret, or a mapping that may hold one, never is.
      const got = SECRET_KEYS.has(path[path.length - 1] ?? '') ? undefined : valueAt(input, path);
      const echo = isScalar(got) || (Array.isArray(got) && got.every(isScalar));
      const shown = echo ? ` (got ${JSON.stringify(got)?.slice(0, 60)})` : '';
      const why = form
        ? `must be ${form}`
        : i.code === 'too_small'
          ? `must be at least ${String(i.minimum)}`
          : i.code === 'too_big'
            ? `must be at most ${String(i.maximum)}`
            : i.message;
      return `${key}${sourcesOf(path)}: ${why}${shown}`;
    });
    throw new ConfigError(`Invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return r.data;
}

/** Command-line flags of `rill serve` that set a config key. */
const FLAGS: Record<string, string> = {
  host: '--host',
  port: '--port',
  engine: '--engine',
  dataDir: '--data-dir',
  'redis.url': '--redis-url',
  'nats.url': '--nats-url',
  demo: '--demo',
  insecure: '--insecure',
  logLevel: '--log-level',
  'tls.cert': '--tls-cert',
  'tls.key': '--tls-key',
};

/** ` (--port, RILL_PORT)`: where a key can be set besides a config file. */
function sourcesOf(path: string[]): string {
  if (path.length === 0 || path.some((p) => /^\d+$/.test(p))) return '';
  const key = path.join('.');
  const env =
    Object.keys(ENV_FLAT).find((e) => ENV_FLAT[e] === key) ??
    `RILL_${path.map((p) => p.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()).join('__')}`;
  return ` (${FLAGS[key] ? `${FLAGS[key]}, ` : ''}${env})`;
}

/** The schema of the key at `path` (defaults and optionality unwrapped), when there is one. */
function schemaAt(path: string[]): z.ZodType | undefined {
  let s: z.ZodType | undefined = ConfigSchema as unknown as z.ZodType;
  const unwrap = (t: z.ZodType): z.ZodType => {
    for (;;) {
      const def = t.def as { type: string; innerType?: z.ZodType };
      if (['default', 'prefault', 'optional', 'nullable'].includes(def.type) && def.innerType) {
        t = def.innerType;
      } else {
        return t;
      }
    }
  };
  for (const seg of path) {
    s = unwrap(s);
    if (s instanceof z.ZodObject) s = s.shape[seg] as z.ZodType | undefined;
    else if (s instanceof z.ZodArray) s = s.element as z.ZodType;
    else return undefined;
    if (s === undefined) return undefined;
  }
  return unwrap(s);
}

/** What the schema takes at `path`, in words ("an integer from 0 to 65535"), when it can tell. */
function expectedForm(path: string[]): string | undefined {
  const s = schemaAt(path);
  if (s instanceof z.ZodNumber) {
    const what = s.isInt ? 'an integer' : 'a number';
    const min = Number.isFinite(s.minValue) && s.minValue !== Number.MIN_SAFE_INTEGER;
    const max = Number.isFinite(s.maxValue) && s.maxValue !== Number.MAX_SAFE_INTEGER;
    if (min && max) return `${what} from ${s.minValue} to ${s.maxValue}`;
    if (min) return `${what} of at least ${s.minValue}`;
    if (max) return `${what} of at most ${s.maxValue}`;
    return what;
  }
  if (s instanceof z.ZodEnum) return `one of ${s.options.join(', ')}`;
  if (s instanceof z.ZodBoolean) return 'true or false';
  return undefined;
}

function valueAt(input: unknown, path: string[]): unknown {
  let v = input;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

/** Reads a JSON or YAML config file (by extension; YAML otherwise, which also reads JSON). */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`Cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    const v: unknown = extname(path) === '.json' ? JSON.parse(text) : parseYaml(text);
    if (v === null || v === undefined) return {};
    if (typeof v !== 'object' || Array.isArray(v)) throw new Error('top level must be a mapping');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`Cannot parse config file ${path}: ${(err as Error).message}`);
  }
}

const ENV_FLAT: Record<string, string> = {
  RILL_HOST: 'host',
  RILL_PORT: 'port',
  RILL_ENGINE: 'engine',
  RILL_DATA_DIR: 'dataDir',
  RILL_DEMO: 'demo',
  RILL_INSECURE: 'insecure',
  RILL_LOG_LEVEL: 'logLevel',
  RILL_IDEMPOTENCY_WINDOW: 'idempotencyWindow',
  RILL_SHUTDOWN_TIMEOUT: 'shutdownTimeout',
  RILL_REDIS_URL: 'redis.url',
  RILL_NATS_URL: 'nats.url',
};

/** Variables read elsewhere (the CLI), not config keys. */
const ENV_OTHER = new Set(['RILL_CONFIG', 'RILL_URL', 'RILL_TOKEN']);

/**
 * Configuration from `RILL_*` variables: the flat ones above, and any nested key as
 * `RILL_SECTION__KEY` in upper snake case (`RILL_LIMITS__MAX_EVENT_BYTES=128KiB`,
 * `RILL_SSE__HEARTBEAT=5s`). Values that look like numbers or booleans become them.
 */
export function configFromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('RILL_') || raw === undefined || ENV_OTHER.has(name)) continue;
    let path: string[];
    const flat = ENV_FLAT[name];
    if (flat) path = flat.split('.');
    else if (name.includes('__')) path = name.slice(5).split('__').map(camel);
    else throw new ConfigError(`Unknown environment variable ${name}`);
    // A key that takes a string gets the text as it is: a secret of digits stays a string.
    setPath(out, path, schemaAt(path) instanceof z.ZodString ? raw : coerce(raw));
  }
  return out;
}

function camel(s: string): string {
  return s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function coerce(v: string): unknown {
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (/^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  if (v.startsWith('[') || v.startsWith('{')) {
    try {
      return JSON.parse(v) as unknown;
    } catch {
      return v;
    }
  }
  return v;
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i]!;
    const next = cur[k];
    if (next === undefined || typeof next !== 'object' || next === null) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[path[path.length - 1]!] = value;
}

/** Deep merge of plain objects; later sources win, arrays are replaced. */
export function mergeConfig(...sources: Record<string, unknown>[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const src of sources) {
    for (const [k, v] of Object.entries(src)) {
      if (v === undefined) continue;
      const prev = out[k];
      if (isPlain(v) && isPlain(prev)) out[k] = mergeConfig(prev, v);
      else out[k] = v;
    }
  }
  return out;
}

function isScalar(v: unknown): boolean {
  return v !== undefined && (v === null || typeof v !== 'object');
}

function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function isLoopback(host: string): boolean {
  return (
    host === 'localhost' ||
    host === '::1' ||
    host === '[::1]' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}
