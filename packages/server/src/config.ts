import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { closest, distance } from 'fastest-levenshtein';
import { z } from 'zod';
import { DEFAULT_MAX_CURSOR_LENGTH, DEFAULT_MAX_CURSOR_TOPICS } from './model/cursor.js';
import { DEFAULT_IDEMPOTENCY_WINDOW_MS, DEFAULT_RETENTION } from './engine/engine.js';
import type { RetentionConfig } from './engine/engine.js';
import {
  ApiKeyEntrySchema,
  authConfigured,
  isHmacAlgorithm,
  JWT_ALGORITHMS,
  MIN_SECRET_BYTES,
} from './model/credentials.js';
import { DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_JSON_DEPTH } from './model/event.js';
import { isHostPattern } from './model/host.js';
import { isTopic, isValidPattern, matchPattern } from './model/topic.js';
import { DEFAULT_LIMITS, LimitOverrideSchema, limitSetSchema } from './model/limits.js';
import proxyaddr from '@fastify/proxy-addr';

/**
 * Configuration: defaults, then a file (JSON or YAML), then `RILL_*` environment variables, then
 * command-line flags, resolved into one typed object and validated once at start-up. Unknown keys
 * are rejected with a message naming the key.
 */

/** Load shedding's defaults (see the `overload` section and docs/operations.md § Load shedding). */
export const DEFAULT_OVERLOAD = {
  maxEventLoopDelay: 1000,
  maxEventLoopUtilization: 0,
  sampleInterval: 1000,
} as const;

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
        // Said in resolveConfig's words for the key (with its least value) rather than these.
        params: { units: true },
        message: `expected a ${what} such as ${what === 'duration' ? '"15s", "500ms", "7d"' : '"64KiB", "1MiB"'} or a number`,
      });
      return z.NEVER;
    }
    return Math.round(Number(m[1]) * mult);
  });
}

/** Most worker processes `rill serve` runs. */
export const MAX_WORKERS = 64;

const duration = withUnits(UNITS_MS, 'duration').pipe(z.number().int().min(0));

/** A duration as the config takes it (`"15s"`, `"1h"`, `"500ms"`, a number of ms) in ms. */
export function parseDuration(value: string | number): number {
  const r = duration.safeParse(value);
  if (!r.success) throw new ConfigError(`${JSON.stringify(value)}: ${r.error.issues[0]?.message}`);
  return r.data;
}
const bytes = withUnits(UNITS_BYTES, 'size').pipe(z.number().int().min(0));

/** A size as the config takes it (`"64KiB"`, `"10MB"`, a number of bytes) in bytes. */
export function parseSize(value: string | number): number {
  const r = bytes.safeParse(value);
  if (!r.success) throw new ConfigError(`${JSON.stringify(value)}: ${r.error.issues[0]?.message}`);
  return r.data;
}
const pattern = z
  .string()
  .refine(isValidPattern, { message: 'expected a topic or pattern such as "logs.>"' });

/** Longest a webhook secret file may be, bytes. */
const MAX_SECRET_FILE_BYTES = 64 * 1024;

/** A webhook signing secret: long enough that a signature does not give it away. */
const webhookSecret = z.string().refine((s) => Buffer.byteLength(s) >= MIN_SECRET_BYTES, {
  message: `must be at least ${MIN_SECRET_BYTES} bytes (\`openssl rand -base64 32\` makes one)`,
});

/** Where Rill may POST: http or https, no credentials in the URL (they would be logged). */
function webhookUrlProblem(s: string): string | null {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return 'expected an http:// or https:// URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    return 'expected an http:// or https:// URL';
  if (u.username !== '' || u.password !== '') {
    return 'must not carry credentials: the receiver checks the signature instead';
  }
  return null;
}

/**
 * The secrets of a webhook file: one per line, blank lines and `#` comments ignored. Throws with a
 * message that names neither the secrets nor a line of the file.
 */
export function readSecretFile(path: string): string[] {
  let text: string;
  try {
    const buf = readFileSync(path);
    if (buf.length > MAX_SECRET_FILE_BYTES) {
      throw new Error(`larger than ${MAX_SECRET_FILE_BYTES} bytes`);
    }
    text = buf.toString('utf8');
  } catch (err) {
    throw new Error(`cannot read it: ${(err as Error).message}`, { cause: err });
  }
  const secrets = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (secrets.length === 0) throw new Error('it holds no secret (one per line)');
  if (secrets.some((s) => !webhookSecret.safeParse(s).success)) {
    throw new Error(`each secret must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  return secrets;
}

/** One outgoing webhook (docs/webhooks.md). */
const WebhookSchema = z
  .strictObject({
    /** Names the webhook in its requests (`rill-webhook`), its state, metrics and logs. */
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, {
      message: 'expected 1-64 characters of [A-Za-z0-9_.-]',
    }),
    url: z.string().superRefine((s, ctx) => {
      const why = webhookUrlProblem(s);
      if (why !== null) ctx.addIssue({ code: 'custom', message: why });
    }),
    /** Topics and patterns whose events it gets. */
    topics: z.array(pattern).min(1).max(100),
    /** The signing secret; or `secrets` (several during a rotation), or `secretFile`. */
    secret: webhookSecret.optional(),
    secrets: z.array(webhookSecret).min(1).max(10).optional(),
    /** A file with the secrets, one per line (kept out of the configuration). */
    secretFile: z.string().min(1).optional(),
    batch: z
      .strictObject({
        /** Most events in one request. */
        maxEvents: z.number().int().min(1).max(10_000).default(100),
        /** How long the first event of a batch may wait for others (0 = send at once). */
        maxWait: duration.pipe(z.number().max(60_000)).default(0),
        /** Most bytes of events in one request (a single larger event goes alone). */
        maxBytes: bytes
          .pipe(
            z
              .number()
              .min(1024)
              .max(64 * 1024 * 1024),
          )
          .default(1024 * 1024),
      })
      .prefault({}),
    /** How long one request may take, answer included. */
    timeout: duration.pipe(z.number().min(100).max(300_000)).default(10_000),
    retry: z
      .strictObject({
        /** The first pause after a failure; it doubles after each, with jitter. */
        initial: duration.pipe(z.number().min(10)).default(1_000),
        /** The longest pause. */
        max: duration.pipe(z.number().min(10)).default(60_000),
      })
      .refine((r) => r.initial <= r.max, {
        message: 'retry.initial must not exceed retry.max',
        path: ['initial'],
      })
      .prefault({}),
    /** Attempts before a batch goes to `deadLetterTopic` (without one, retries never stop). */
    maxAttempts: z.number().int().min(1).max(1000).default(10),
    /** Where a batch that failed `maxAttempts` times goes, one event per event; none by default. */
    deadLetterTopic: z.string().refine(isTopic, { message: 'expected a topic name' }).optional(),
  })
  .superRefine((w, ctx) => {
    const given = (['secret', 'secrets', 'secretFile'] as const).filter((k) => w[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          given.length === 0
            ? 'give one of secret, secrets, secretFile'
            : `give only one of ${given.join(', ')}`,
      });
    }
    if (w.secretFile !== undefined) {
      try {
        readSecretFile(w.secretFile);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['secretFile'], message: (err as Error).message });
      }
    }
    const dlt = w.deadLetterTopic;
    if (dlt !== undefined && w.topics.some((p) => matchPattern(p, dlt))) {
      ctx.addIssue({
        code: 'custom',
        path: ['deadLetterTopic'],
        message: "must not be one of the webhook's own topics (its failures would loop)",
      });
    }
  });

export type WebhookConfig = z.output<typeof WebhookSchema>;

/** A webhook's signing secrets (the file read again: it may have changed since start-up). */
export function webhookSecrets(w: WebhookConfig): string[] {
  if (w.secretFile !== undefined) return readSecretFile(w.secretFile);
  return w.secrets ?? (w.secret === undefined ? [] : [w.secret]);
}

const RetentionRuleSchema = z.strictObject({
  pattern,
  maxEvents: z.number().int().min(0).optional(),
  maxAge: duration.optional(),
  maxBytes: bytes.optional(),
});

/**
 * A topic's retention override as `PUT /v1/topics/{topic}/retention` takes it: a rule without its
 * pattern. The API description's body schema is generated from it (`api/schemas.ts`).
 */
export const RetentionOverrideSchema = RetentionRuleSchema.omit({ pattern: true });

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

/** A backend hook's endpoint: http or https (a backend on a private network may be plain HTTP). */
const HookEndpointSchema = z.strictObject({
  url: z.string().refine(
    (s) => {
      try {
        const u = new URL(s);
        return (u.protocol === 'http:' || u.protocol === 'https:') && u.username === '';
      } catch {
        return false;
      }
    },
    { message: 'expected an http:// or https:// URL without credentials' },
  ),
});

/** A secret hook requests are signed with: as long as a JWT secret, so it cannot be guessed. */
const hookSecret = z.string().refine((s) => Buffer.byteLength(s) >= MIN_SECRET_BYTES, {
  message: `must be at least ${MIN_SECRET_BYTES} bytes (\`openssl rand -base64 32\` makes one)`,
});

/**
 * Backend hooks (docs/protocol.md § Backend hooks): the application's backend allows, denies or
 * enriches connections, subscriptions and publishes. Off unless a hook's URL is set.
 */
const HooksSchema = z
  .strictObject({
    connect: HookEndpointSchema.optional(),
    subscribe: HookEndpointSchema.optional(),
    publish: HookEndpointSchema.optional(),
    timeout: duration.pipe(z.number().int().min(1).max(60_000)).default(2_000),
    failurePolicy: z.enum(['deny', 'allow']).default('deny'),
    secret: hookSecret.optional(),
    secrets: z.array(hookSecret).min(1).max(8).optional(),
    cacheTtl: duration.default(0),
  })
  .superRefine((h, ctx) => {
    const on = h.connect !== undefined || h.subscribe !== undefined || h.publish !== undefined;
    if (on && h.secret === undefined && h.secrets === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['secret'],
        message: 'required with a hook URL: every hook request is signed with it',
      });
    }
  });

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

/** An IP address, a CIDR block, or one of `loopback`, `linklocal`, `uniquelocal`. */
const addressRange = z.string().refine(
  (s) => {
    try {
      proxyaddr.compile(s);
      return true;
    } catch {
      return false;
    }
  },
  {
    message:
      'expected an IP address, a CIDR such as "10.0.0.0/8", or loopback/linklocal/uniquelocal',
  },
);

/** Rate and count limits per API key, JWT subject and client address (docs/limits.md). */
const RateLimitsSchema = z
  .strictObject({
    /** Off: no rate or count limit at all (the size limits and the connection budget still hold). */
    enabled: z.boolean().default(true),
    /** Each API key's limits. */
    perKey: limitSetSchema(DEFAULT_LIMITS.key),
    /** Each JWT subject's limits. */
    perUser: limitSetSchema(DEFAULT_LIMITS.user),
    /** Each client address's limits (an IPv6 client counts by its /64). */
    perAddress: limitSetSchema(DEFAULT_LIMITS.address),
    /** Limits of one key (by name), one subject, one address range; the rest from the scope's. */
    overrides: z
      .strictObject({
        keys: z.record(z.string().min(1).max(64), LimitOverrideSchema).default({}),
        users: z.record(z.string().min(1).max(1024), LimitOverrideSchema).default({}),
        addresses: z.record(addressRange, LimitOverrideSchema).default({}),
      })
      .prefault({}),
    /**
     * Peers whose `Forwarded` / `X-Forwarded-For` is believed: the client is the rightmost address
     * there that is not a trusted proxy. From any other peer these headers are ignored.
     */
    trustedProxies: z.array(addressRange).max(1000).default([]),
    /** Clients not held to the per-address limits (their key or user limits still apply). */
    exemptAddresses: z.array(addressRange).max(1000).default(['loopback']),
    /**
     * `auto`: with the redis and nats engines, the nodes share their counts through the broker;
     * `local`: each node counts alone (as with memory and lmdb).
     */
    shared: z.enum(['auto', 'local']).default('auto'),
    /** How often a node exchanges its counts with the others (shared limits). */
    syncInterval: duration.pipe(z.number().min(20).max(5000)).default(200),
  })
  .prefault({});

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
export const LOG_COMPONENTS = ['http', 'ws', 'engine', 'auth', 'fanout', 'webhooks'] as const;
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
         * A level per component (`http`, `ws`, `engine`, `auth`, `fanout`, `webhooks`), over `logLevel`:
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
    /**
     * Worker processes of `rill serve`, sharing the port: 1 (one process, no supervisor), a number,
     * or `auto` (one per available core).
     */
    workers: z
      .union([z.enum(['auto']), z.number().int().min(1).max(MAX_WORKERS)], {
        message: `expected auto or a whole number from 1 to ${MAX_WORKERS}`,
      })
      .default(1),
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
    hooks: HooksSchema.prefault({}),
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
    /**
     * Load shedding (net/overload.ts): while the event loop is this late or this busy, new
     * streams, WebSocket connections and publishes are refused with `503 overloaded`; open streams
     * go on. Both thresholds 0 turn it off.
     */
    overload: z
      .strictObject({
        /** Mean event-loop delay over one sample past which the process is overloaded; 0 = off. */
        maxEventLoopDelay: duration.default(DEFAULT_OVERLOAD.maxEventLoopDelay),
        /** Event-loop utilisation (0–1) over one sample past which it is overloaded; 0 = off. */
        maxEventLoopUtilization: z
          .number()
          .min(0)
          .max(1)
          .default(DEFAULT_OVERLOAD.maxEventLoopUtilization),
        /** How often the event loop is measured. */
        sampleInterval: duration
          .pipe(z.number().min(10).max(60_000))
          .default(DEFAULT_OVERLOAD.sampleInterval),
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
    rateLimits: RateLimitsSchema,
    /**
     * Authentication: JWTs, API keys, what anonymous requests may do. On when any of `jwt`,
     * `apiKeys`, `apiKeysFile` or `anonymous` is set ({@link authEnabled}).
     */
    auth: AuthSchema.prefault({}),
    /** Outgoing webhooks: batches of stored events POSTed to URLs, signed (docs/webhooks.md). */
    webhooks: z
      .array(WebhookSchema)
      .max(100)
      .superRefine((list, ctx) => {
        const names = new Set<string>();
        list.forEach((w, i) => {
          if (names.has(w.name)) {
            ctx.addIssue({
              code: 'custom',
              path: [i, 'name'],
              message: `webhook name ${JSON.stringify(w.name)} is used twice`,
            });
          }
          names.add(w.name);
        });
      })
      .default([]),
    /**
     * How long a webhook's delivery loop holds its lease without renewing it (renewed every
     * third): a node that dies while delivering is replaced within this and a third of it more.
     */
    webhookLease: duration.pipe(z.number().min(1_000).max(300_000)).default(10_000),
    /** Metrics and stats (docs/observability.md). */
    metrics: z
      .strictObject({
        /**
         * Serve `/metrics` (Prometheus) and `/v1/stats`, and keep the histograms and samplers they
         * read. The counters themselves cost an integer add per flush and are always kept.
         */
        enabled: z.boolean().default(true),
        /**
         * A second listener serving only `/metrics`, without authentication (keep it on a private
         * address); none by default. On the main port `/metrics` needs the admin permission when
         * authentication is on.
         */
        port: z.coerce.number().int().min(0).max(65535).optional(),
        /** The address of the metrics listener. */
        host: z.string().min(1).default('127.0.0.1'),
        /**
         * Topics with series of their own (published, delivered, subscribers), as names or
         * patterns; none by default: every topic is counted in the totals only. At most 1,000
         * topics get series, whatever the patterns match.
         */
        topics: z.array(pattern).max(100).default([]),
      })
      .prefault({}),
    /**
     * Serve HTTPS (HTTP/2 with HTTP/1.1 fallback) with this certificate and key; plain HTTP when
     * neither is set. Reloaded on SIGHUP.
     */
    tls: TlsSchema.prefault({}),
  })
  .superRefine((c, ctx) => {
    if (c.workers !== 1 && c.engine === 'memory') {
      ctx.addIssue({
        code: 'custom',
        path: ['workers'],
        message:
          'the memory engine lives in one process and cannot be shared by workers: use lmdb, redis or nats, or workers: 1',
      });
    }
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
const SECRET_KEYS = new Set(['secret', 'secrets']);

/** Validates and fills defaults. Throws ConfigError with one line per problem. */
export function resolveConfig(input: unknown): RillConfig {
  const r = ConfigSchema.safeParse(input ?? {});
  if (!r.success) {
    const lines = r.error.issues.flatMap((i) => {
      const path = i.path.map(String);
      const key = path.join('.');
      if (i.code === 'unrecognized_keys') {
        return i.keys.map(
          (k) =>
            `${key === '' ? '' : `${key}: `}unknown key ${JSON.stringify(k)}${didYouMean(path, k)}`,
        );
      }
      // A plain value is echoed; a secret, or a mapping that may hold one, never is.
      const got = path.some((p) => SECRET_KEYS.has(p)) ? undefined : valueAt(input, path);
      const echo = isScalar(got) || (Array.isArray(got) && got.every(isScalar));
      const shown = echo ? ` (got ${JSON.stringify(got)?.slice(0, 60)})` : '';
      return [`${key || '(root)'}${sourcesOf(path)}: ${problem(i, path)}${shown}`];
    });
    throw new ConfigError(`Invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return r.data;
}

/**
 * What is wrong with a value, in the words of the key's form ("must be a TCP port number …"), so
 * the validator's own phrasing ("Invalid input: expected number, received string") never reaches
 * a person. A check the schema words itself (a custom message) is said as written.
 */
function problem(i: z.core.$ZodIssue, path: string[]): string {
  const s = schemaAt(path);
  const kind = s === undefined ? undefined : kindOf(s);
  if (i.code === 'custom' && !(i.params as { units?: boolean } | undefined)?.units) {
    return i.message;
  }
  if (kind === 'duration' || kind === 'size') return `must be ${formOf(s!, path.join('.'))}`;
  if (kind === 'string') {
    if (i.code === 'too_small')
      return Number(i.minimum) <= 1
        ? 'must not be empty'
        : `must be at least ${String(i.minimum)} characters`;
    if (i.code === 'too_big') return `must be at most ${String(i.maximum)} characters`;
    if (i.code === 'invalid_type') return 'must be text';
    return i.message;
  }
  if (kind === 'list') {
    if (i.code === 'too_small') return `must have at least ${String(i.minimum)} entries`;
    if (i.code === 'too_big') return `must have at most ${String(i.maximum)} entries`;
  }
  if (s !== undefined) return `must be ${formOf(s, path.join('.'))}`;
  return i.message;
}

/** `(did you mean "port"?)` for an unknown key: a close sibling, or the same name elsewhere. */
function didYouMean(path: string[], key: string): string {
  const here = schemaAt(path);
  const siblings = here instanceof z.ZodObject ? Object.keys(here.shape) : [];
  const near = siblings.length > 0 ? closest(key, siblings) : undefined;
  if (near !== undefined && distance(key, near) <= Math.max(2, Math.floor(key.length / 3))) {
    return ` (did you mean ${JSON.stringify(near)}?)`;
  }
  // The right name in the wrong place: `maxEventBytes` at the top level is `limits.maxEventBytes`.
  const elsewhere = configSettings().find(
    (s) => s.path[s.path.length - 1]!.toLowerCase() === key.toLowerCase(),
  );
  return elsewhere ? ` (did you mean ${elsewhere.key}?)` : '';
}

/** Command-line flags of `rill serve` that set a config key. */
export const CONFIG_FLAGS: Readonly<Record<string, string>> = {
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
  workers: '--workers',
};

/** The environment variable of the key at `path` (`RILL_PORT`, `RILL_LIMITS__MAX_EVENT_BYTES`). */
export function envNameOf(path: readonly string[]): string {
  const key = path.join('.');
  return (
    Object.keys(ENV_FLAT).find((e) => ENV_FLAT[e] === key) ??
    `RILL_${path.map((p) => p.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()).join('__')}`
  );
}

/** ` (--port, RILL_PORT)`: where a key can be set besides a config file. */
function sourcesOf(path: string[]): string {
  if (path.length === 0 || path.some((p) => /^\d+$/.test(p))) return '';
  const flag = CONFIG_FLAGS[path.join('.')];
  return ` (${flag ? `${flag}, ` : ''}${envNameOf(path)})`;
}

interface Unwrapped {
  schema: z.ZodType;
  /** A default (or prefault) applies when the key is left out. */
  defaulted: boolean;
  /** The first description met on the way in (`.describe()` / `.meta()`), if any. */
  description?: string;
}

/** Strips default, prefault, optional and nullable wrappers. */
function unwrap(t: z.ZodType): Unwrapped {
  let defaulted = false;
  let description = t.description;
  for (;;) {
    const def = t.def as { type: string; innerType?: z.ZodType };
    if (!['default', 'prefault', 'optional', 'nullable'].includes(def.type) || !def.innerType) {
      return { schema: t, defaulted, ...(description !== undefined ? { description } : {}) };
    }
    if (def.type === 'default' || def.type === 'prefault') defaulted = true;
    t = def.innerType;
    description ??= t.description;
  }
}

/** The schema of the key at `path` (defaults and optionality unwrapped), when there is one. */
function schemaAt(path: string[]): z.ZodType | undefined {
  let s: z.ZodType | undefined = ConfigSchema as unknown as z.ZodType;
  for (const seg of path) {
    s = unwrap(s).schema;
    if (s instanceof z.ZodObject) s = s.shape[seg] as z.ZodType | undefined;
    else if (s instanceof z.ZodArray) s = s.element as z.ZodType;
    else if (s instanceof z.ZodRecord) s = s.valueType as z.ZodType;
    else return undefined;
    if (s === undefined) return undefined;
  }
  return unwrap(s).schema;
}

/** How a setting is written. */
export type SettingKind =
  | 'duration'
  | 'size'
  | 'integer'
  | 'number'
  | 'boolean'
  | 'choice'
  | 'string'
  | 'list'
  | 'mapping'
  | 'value';

/** Whether `t` is `base` or a pipe out of it (`duration.pipe(z.number().min(100))`). */
function pipedFrom(t: z.ZodType, base: z.ZodType): boolean {
  for (let s: z.ZodType | undefined = t; s !== undefined;) {
    if (s === base) return true;
    const def = s.def as { type: string; in?: z.ZodType };
    s = def.type === 'pipe' ? def.in : undefined;
  }
  return false;
}

/** What a pipe delivers (a preprocessed list is a list). */
function pipeOut(t: z.ZodType): z.ZodType {
  const def = t.def as { type: string; out?: z.ZodType };
  return def.type === 'pipe' && def.out ? unwrap(def.out).schema : t;
}

function kindOf(t: z.ZodType): SettingKind {
  if (pipedFrom(t, duration)) return 'duration';
  if (pipedFrom(t, bytes)) return 'size';
  const s = pipeOut(t);
  if (s instanceof z.ZodNumber) return s.isInt ? 'integer' : 'number';
  if (s instanceof z.ZodBoolean) return 'boolean';
  if (s instanceof z.ZodEnum) return 'choice';
  if (s instanceof z.ZodString) return 'string';
  if (s instanceof z.ZodArray) return 'list';
  if (s instanceof z.ZodObject || s instanceof z.ZodRecord) return 'mapping';
  // A mapping read into another form (a scope's limit set, filled from its defaults).
  const def = t.def as { type: string; in?: z.ZodType };
  if (def.type === 'pipe' && def.in && unwrap(def.in).schema instanceof z.ZodObject) {
    return 'mapping';
  }
  return 'value';
}

/** The smallest value the last number check of a pipe allows, above 0 (`pingInterval`: 100). */
function pipeMinimum(t: z.ZodType): number {
  let min = 0;
  for (let s: z.ZodType | undefined = t; s !== undefined;) {
    const def = s.def as { type: string; in?: z.ZodType; out?: z.ZodType };
    if (def.type !== 'pipe') break;
    if (def.out instanceof z.ZodNumber && Number.isFinite(def.out.minValue)) {
      min = Math.max(min, def.out.minValue ?? 0);
    }
    s = def.in;
  }
  return min;
}

/** Forms that say more than the type does. */
const FORMS: Readonly<Record<string, string>> = {
  port: 'a TCP port number from 0 to 65535 (0 picks a free one)',
};

/** What the schema takes, in words ("an integer from 0 to 65535"). */
function formOf(t: z.ZodType, key?: string): string {
  if (key !== undefined && FORMS[key]) return FORMS[key];
  const kind = kindOf(t);
  const s = pipeOut(t);
  switch (kind) {
    case 'duration': {
      const min = pipeMinimum(t);
      return `a duration${min > 0 ? ` of at least ${formatDuration(min)}` : ''} such as "15s", "500ms" or "7d" (a plain number is ms)`;
    }
    case 'size': {
      const min = pipeMinimum(t);
      return `a size${min > 0 ? ` of at least ${formatBytes(min)}` : ''} such as "64KiB" or "8MiB" (a plain number is bytes)`;
    }
    case 'integer':
    case 'number': {
      const n = s as z.ZodNumber;
      const what = kind === 'integer' ? 'an integer' : 'a number';
      const min = Number.isFinite(n.minValue) && n.minValue !== Number.MIN_SAFE_INTEGER;
      const max = Number.isFinite(n.maxValue) && n.maxValue !== Number.MAX_SAFE_INTEGER;
      if (min && max) return `${what} from ${n.minValue} to ${n.maxValue}`;
      if (min) return `${what} of at least ${n.minValue}`;
      if (max) return `${what} of at most ${n.maxValue}`;
      return what;
    }
    case 'boolean':
      return 'true or false';
    case 'choice':
      return `one of ${(s as z.ZodEnum).options.join(', ')}`;
    case 'string':
      return 'text';
    case 'list': {
      const el = unwrap((s as z.ZodArray).element as z.ZodType).schema;
      const inner = kindOf(el);
      return inner === 'mapping'
        ? 'a list of mappings'
        : inner === 'string' || inner === 'value'
          ? 'a list of strings'
          : `a list, each ${formOf(el)}`;
    }
    case 'mapping':
      return 'a mapping of keys to values';
    default: {
      const options = (s.def as { options?: z.ZodType[] }).options;
      return options
        ? options.map((o) => formOf(unwrap(o).schema)).join(' or ')
        : 'a value (see the documentation)';
    }
  }
}

/** `90000` → `"90s"`: the largest unit that says a number of ms exactly. */
export function formatDuration(ms: number): string | number {
  if (ms === 0) return 0;
  for (const [unit, n] of [
    ['d', 86_400_000],
    ['h', 3600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % n === 0) return `${ms / n}${unit}`;
  }
  return `${ms}ms`;
}

/** `65536` → `"64KiB"`: the largest binary unit that says a number of bytes exactly. */
export function formatBytes(n: number): string | number {
  if (n === 0) return 0;
  for (const [unit, m] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (n % m === 0) return `${n / m}${unit}`;
  }
  return n;
}

/** One setting of the configuration schema, as `rill init` writes it and `--help` lists it. */
export interface SettingInfo {
  /** `limits.maxEventBytes` */
  key: string;
  path: string[];
  /** The top-level key it belongs to (`limits`), or `''` for a top-level scalar. */
  section: string;
  /** Its environment variable (`RILL_LIMITS__MAX_EVENT_BYTES`). */
  env: string;
  /** Its `rill serve` flag, when it has one. */
  flag?: string;
  kind: SettingKind;
  /** What it takes, in words. */
  form: string;
  /** The default as a config file writes it (`"64KiB"`, `8080`, `[]`); undefined when none. */
  default: unknown;
  /**
   * In effect when left out: false under a section that is off unless written (`auth.jwt`), where
   * writing the key turns the section on.
   */
  active: boolean;
  /** The schema's own description, when it gives one. */
  description?: string;
}

let settingsCache: SettingInfo[] | undefined;

/**
 * Every setting of {@link ConfigSchema}, walked from the schema itself (a key added to it appears
 * here with its type, default, variable and flag): objects are descended, everything else is a
 * setting, with the default its schema gives when it is left out.
 */
export function configSettings(): SettingInfo[] {
  if (settingsCache) return settingsCache;
  const out: SettingInfo[] = [];
  const visit = (t: z.ZodType, path: string[], active: boolean): void => {
    const u = unwrap(t);
    if (u.schema instanceof z.ZodObject) {
      const on = path.length === 0 || (active && u.defaulted);
      for (const [k, v] of Object.entries(u.schema.shape)) visit(v as z.ZodType, [...path, k], on);
      return;
    }
    const key = path.join('.');
    const kind = kindOf(u.schema);
    // The leaf's own default, also under a section that is off (auth.jwt.maxLifetime: 24h).
    const parsed = u.defaulted ? t.safeParse(undefined) : undefined;
    const value = parsed?.success ? parsed.data : undefined;
    out.push({
      key,
      path,
      section: path.length > 1 ? path[0]! : '',
      env: envNameOf(path),
      ...(CONFIG_FLAGS[key] ? { flag: CONFIG_FLAGS[key] } : {}),
      kind,
      form: formOf(u.schema, key),
      default:
        value === undefined
          ? undefined
          : kind === 'duration'
            ? formatDuration(value as number)
            : kind === 'size'
              ? formatBytes(value as number)
              : value,
      active,
      ...(u.description !== undefined ? { description: u.description } : {}),
    });
  };
  visit(ConfigSchema as unknown as z.ZodType, [], true);
  return (settingsCache = out);
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
  RILL_WORKERS: 'workers',
  RILL_REDIS_URL: 'redis.url',
  RILL_NATS_URL: 'nats.url',
  RILL_WEBHOOKS: 'webhooks',
  RILL_WEBHOOK_LEASE: 'webhookLease',
};

/** Variables read elsewhere (the CLI), not config keys. */
const ENV_OTHER = new Set([
  'RILL_CONFIG',
  'RILL_URL',
  'RILL_TOKEN',
  'RILL_WORKER_ID',
  'RILL_NODE_ID',
]);

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
    else path = [];
    if (path.length === 0 || schemaAt(path) === undefined) {
      throw new ConfigError(`Unknown environment variable ${name}${envDidYouMean(name)}`);
    }
    // A key that takes a string gets the text as it is: a secret of digits stays a string.
    setPath(out, path, schemaAt(path) instanceof z.ZodString ? raw : coerce(raw));
  }
  return out;
}

/** `(did you mean RILL_PORT?)` for a variable that is not one of Rill's. */
function envDidYouMean(name: string): string {
  const names = [...configSettings().map((s) => s.env), ...ENV_OTHER];
  const near = closest(name, names);
  return distance(name, near) <= Math.max(2, Math.floor((name.length - 5) / 3))
    ? ` (did you mean ${near}?)`
    : '';
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

/** The retention limits as the engine contract takes them (durations in ms). */
export function engineRetention(config: RillConfig): RetentionConfig {
  return {
    maxEvents: config.retention.maxEvents,
    maxAgeMs: config.retention.maxAge,
    maxBytes: config.retention.maxBytes,
    rules: config.retention.rules.map((r) => ({
      pattern: r.pattern,
      ...(r.maxEvents === undefined ? {} : { maxEvents: r.maxEvents }),
      ...(r.maxAge === undefined ? {} : { maxAgeMs: r.maxAge }),
      ...(r.maxBytes === undefined ? {} : { maxBytes: r.maxBytes }),
    })),
  };
}
