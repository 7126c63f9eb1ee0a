import { stringify } from 'yaml';
import { configSettings, type SettingInfo } from '../config.js';

/**
 * The configuration as a person reads it: `rill serve --help` lists every setting and `rill init`
 * writes a commented `rill.yaml` with every setting. Both walk the schema ({@link configSettings}),
 * so a key added to it is listed and written with its type, default, variable and flag; its
 * sentence comes from the schema's own description or from {@link DESCRIPTIONS}.
 */

/** One sentence per setting (the README's config table says more). */
export const DESCRIPTIONS: Readonly<Record<string, string>> = {
  host: 'Address to bind. A non-loopback address needs authentication or insecure: true.',
  port: 'TCP port to listen on.',
  engine: 'Storage engine: lmdb (durable, on disk), memory, redis or nats (many nodes).',
  dataDir: "Directory of the lmdb engine's files (created if missing).",
  'redis.url': 'Redis of the redis engine; rediss:// for TLS.',
  'redis.prefix': 'Prefix of every Redis key and channel.',
  'nats.url': 'NATS servers of the nats engine, comma-separated.',
  'nats.prefix': 'Prefix of every JetStream stream and subject.',
  'nats.replicas': 'Replicas per topic stream (3 on a JetStream cluster).',
  demo: 'Publish a random integer 0-99 to demo.random every 100 ms.',
  insecure: 'Allow a non-loopback host without authentication.',
  logLevel: 'Log level of the JSON log lines on stdout.',
  shutdownTimeout:
    'Longest graceful shutdown; past it the engine is closed and the exit code is 1.',
  workers:
    'Worker processes sharing the port (auto = one per core); lmdb, redis or nats engines only.',
  'log.levels.http': 'Level of the HTTP requests and streams (SSE, NDJSON, long-poll) lines.',
  'log.levels.ws': 'Level of the WebSocket connection lines.',
  'log.levels.engine': 'Level of the storage engine lines.',
  'log.levels.auth': 'Level of the authentication lines.',
  'log.levels.fanout': 'Level of the fan-out lines (slow consumers).',
  'log.levels.webhooks': 'Level of the outgoing webhook lines (leases, failed deliveries).',
  'log.pretty': 'Readable lines instead of JSON; by default when stdout is a terminal.',
  'rateLimits.enabled':
    'Rate and count limits per key, user and address (off: only size limits and the budget).',
  'rateLimits.perKey': "Each API key's limits (connections, subscriptions, rates).",
  'rateLimits.perUser': "Each JWT subject's limits.",
  'rateLimits.perAddress': "Each client address's limits (an IPv6 client counts by its /64).",
  'rateLimits.overrides.keys': 'Limits of named API keys, over the perKey ones.',
  'rateLimits.overrides.users': 'Limits of named JWT subjects, over the perUser ones.',
  'rateLimits.overrides.addresses': 'Limits of address ranges (CIDR), over the perAddress ones.',
  'rateLimits.trustedProxies':
    'Proxies whose Forwarded / X-Forwarded-For headers name the client address.',
  'rateLimits.exemptAddresses': 'Addresses not held to the per-address limits.',
  'rateLimits.shared': 'auto: nodes on redis or nats share their counts; local: each counts alone.',
  'rateLimits.syncInterval': 'How often a node exchanges its counts with the other nodes.',
  webhooks:
    'Outgoing webhooks: [{name, url, topics, secret, batch, timeout, retry, maxAttempts, deadLetterTopic}] (docs/webhooks.md).',
  webhookLease:
    "How long a webhook's delivery loop holds its lease; a dead leader is replaced within it and a third.",
  'metrics.enabled': 'Count and serve Prometheus metrics at /metrics and stats at /v1/stats.',
  'metrics.port':
    'Serve /metrics on a listener of its own at this port (unauthenticated; keep it private).',
  'metrics.host': 'Address of the metrics listener.',
  'metrics.topics': 'Topic patterns that get series of their own (cardinality stays bounded).',
  'presence.enabled':
    'Track who is subscribed to which topic (off: the presence routes answer 404).',
  'presence.grace':
    'How long a subscriber whose last stream closed stays present (0 = leave at once).',
  'presence.ttl':
    "Redis and NATS: how soon a dead node's members are gone (refreshed every third).",
  'hooks.connect.url':
    'Backend URL asked once per connection: allow, deny, or add info and narrow the grants.',
  'hooks.subscribe.url': 'Backend URL asked once per topic per connection: allow or deny.',
  'hooks.publish.url': 'Backend URL asked for every publish: allow or deny.',
  'hooks.timeout': 'How long a hook call may take before the failure policy decides.',
  'hooks.failurePolicy':
    'deny (503 hook_unavailable) or allow when a hook times out, fails or cannot be reached.',
  'hooks.secret':
    'Shared secret hook requests are signed with (rill-signature), at least 32 bytes.',
  'hooks.secrets':
    'Several signing secrets during a rotation: each request carries every signature.',
  'hooks.cacheTtl':
    'How long publish and long-poll decisions are kept per credential, address and topic (0 = none).',
  'overload.maxEventLoopDelay':
    'Mean event-loop delay past which new streams and publishes get 503 overloaded (0 = off).',
  'overload.maxEventLoopUtilization':
    'Event-loop utilisation (0-1) past which new streams and publishes are refused (0 = off).',
  'overload.sampleInterval': 'How often the event loop is measured for load shedding.',
  'retention.maxEvents': 'Events kept per topic (0 = no limit).',
  'retention.maxAge': 'Oldest event kept (0 = no limit).',
  'retention.maxBytes':
    "Bytes of events kept per topic, counting each event's data, type and key (0 = no limit).",
  'retention.rules':
    'Per-pattern overrides, first match wins: [{pattern: "logs.>", maxEvents: 1000, maxAge: 1h, maxBytes: 10MiB}].',
  'storage.maxBytes':
    'Bytes of events the whole store keeps, memory and lmdb engines (0 = no limit); past it a publish gets 507.',
  idempotencyWindow: 'How long a publish key is remembered.',
  'limits.maxEventBytes': 'Largest event (data JSON + type + key).',
  'limits.maxJsonDepth': "Deepest nesting of arrays and objects in an event's data.",
  'limits.maxBatchEvents': 'Most events per publish request.',
  'limits.maxBodyBytes': 'Largest publish request body.',
  'limits.maxSubscriberBufferBytes':
    'Bytes waiting for one subscriber before it leaves the live path and catches up from the log.',
  'limits.replayBatch': 'Most events one replay step reads from the log.',
  'limits.maxTopicsPerSubscription': 'Topics in one subscription after pattern expansion.',
  'limits.maxPatternsPerSubscription': 'Topics and patterns named in one subscribe request.',
  'limits.maxCursorLength': 'Longest cursor accepted (Last-Event-ID, lastEventId, cursor).',
  'limits.maxCursorTopics':
    'Topics a multi-topic SSE id lists before a time watermark covers the rest.',
  'limits.maxPageSize': 'Largest page of history one request returns.',
  'http.maxHeaderSize': 'Largest request head (all headers).',
  'http.maxHeadersCount': 'Most request headers.',
  'http.allowedOrigins':
    "Origins of other sites' pages that may use this server (CORS and the WebSocket Origin check); * for any.",
  'http.allowedHosts':
    'Host names served besides localhost, IP addresses and host: rill.example.com, .example.com, * (DNS rebinding).',
  'http.requestTimeout':
    'Longest time to receive a request, body included (0 = none); streams are not cut.',
  'http.headersTimeout': 'Longest time to receive a request head; at most requestTimeout.',
  'http.keepAliveTimeout':
    "Idle keep-alive connections close after this; keep it above a proxy's idle time.",
  'http.compression': 'gzip SSE and NDJSON streams for clients that accept it.',
  'ws.maxPayload': 'Largest WebSocket message.',
  'ws.maxSubscriptions': 'Subscriptions per WebSocket.',
  'ws.pingInterval': 'Protocol ping interval.',
  'ws.pingTimeout': 'A peer silent this long after a ping is terminated.',
  'ws.perMessageDeflate': 'Negotiate permessage-deflate with clients that offer it.',
  'sse.heartbeat': 'Comment line sent on an idle stream.',
  'sse.retry': 'Reconnect delay suggested to EventSource clients (retry:).',
  'auth.jwt.secret':
    'Shared HS256 secret, at least 32 bytes (openssl rand -base64 32). Turns authentication on.',
  'auth.jwt.keys':
    'Verification keys, each a secret, publicKey, publicKeyFile or jwksUrl with a kid and algorithms.',
  'auth.jwt.audience': "When set, a token's aud must name one of these.",
  'auth.jwt.issuer': "When set, a token's iss must be one of these.",
  'auth.jwt.maxLifetime': 'Longest token lifetime accepted (exp - iat).',
  'auth.jwt.clockSkew': 'Allowance on exp, nbf and iat for clocks that disagree.',
  'auth.jwt.jwksRefresh': 'How often each JWKS is fetched again.',
  'auth.apiKeys': 'API keys by hash, as rill keys add prints them. Turns authentication on.',
  'auth.apiKeysFile': 'A YAML or JSON file of API key entries, watched and reloaded.',
  'auth.anonymous.subscribe': 'Topics and patterns requests without credentials may subscribe to.',
  'auth.anonymous.publish': 'Topics and patterns requests without credentials may publish to.',
  'auth.cookie': 'Cookie a token is read from (same-site apps); none unless set.',
  'auth.wsAuthTimeout':
    'Deadline for the first WebSocket auth message when the upgrade had no token.',
  'auth.expiryWarning': 'How long before a token expires a WebSocket is sent token_expiring.',
  'tls.cert': 'PEM certificate chain (leaf first) to serve HTTPS and HTTP/2 with; needs tls.key.',
  'tls.key': 'Unencrypted PEM private key of tls.cert.',
};

/** Words of the top-level sections, as headings. */
const SECTIONS: Readonly<Record<string, string>> = {
  '': 'Server',
  redis: 'Redis engine',
  nats: 'NATS engine',
  retention: 'Retention, per topic',
  storage: 'Storage, the whole store',
  limits: 'Limits',
  http: 'HTTP',
  ws: 'WebSocket',
  sse: 'Server-Sent Events',
  auth: 'Authentication',
  hooks: 'Backend hooks',
  tls: 'TLS',
};

export function descriptionOf(s: SettingInfo): string | undefined {
  return s.description ?? DESCRIPTIONS[s.key];
}

/**
 * The sentence and what it takes, briefly: the units of durations and sizes are said once at the
 * top, and text goes without saying.
 */
function about(s: SettingInfo): string {
  const what = descriptionOf(s);
  const form = s.kind === 'string' ? '' : s.form.replace(/ such as .*$/, '');
  return [what, form && `Takes ${form}.`].filter(Boolean).join(' ');
}

/** A default as one line: `8080`, `64KiB`, `[]`, `none`. */
function shown(value: unknown): string {
  if (value === undefined) return 'none';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Settings by section, top-level scalars first, in schema order. */
function grouped(): [string, SettingInfo[]][] {
  const groups = new Map<string, SettingInfo[]>([['', []]]);
  for (const s of configSettings()) {
    const list = groups.get(s.section) ?? [];
    list.push(s);
    groups.set(s.section, list);
  }
  return [...groups];
}

/** Splits `text` into lines of at most `width` characters, each prefixed by `indent`. */
function wrap(text: string, indent: string, width = 100): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(indent + line);
  return lines;
}

/**
 * Every setting for `rill serve --help`: by section, each with its default, flag, variable, what
 * it takes and what it does.
 */
export function settingsHelp(): string {
  const out = [
    '',
    'Settings (config file key = default; flag, environment variable). Flags win over variables,',
    'variables over the config file (--config). `rill init` writes a rill.yaml with all of them.',
    'Durations take ms, s, m, h, d ("15s"; a plain number is ms); sizes take KiB, MiB, GiB',
    '("64KiB"; a plain number is bytes).',
  ];
  for (const [section, settings] of grouped()) {
    out.push('', `${SECTIONS[section] ?? section}:`);
    for (const s of settings) {
      const where = [s.flag, s.path.length > 0 ? s.env : undefined].filter(Boolean).join(', ');
      out.push(`  ${s.key} = ${shown(s.default)}${where ? `   (${where})` : ''}`);
      out.push(...wrap(about(s), '      '));
    }
  }
  return `${out.join('\n')}\n`;
}

/** An example value for a key that has no default, as `rill init` writes it commented out. */
const EXAMPLES: Readonly<Record<string, string>> = {
  'auth.jwt.secret': '"<openssl rand -base64 32>"',
  'auth.jwt.keys': '[{ kid: k1, jwksUrl: "https://idp.example/jwks.json", algorithms: [RS256] }]',
  'auth.jwt.audience': 'rill',
  'auth.jwt.issuer': 'https://idp.example',
  'auth.apiKeys': '[]',
  'auth.apiKeysFile': './keys.yaml',
  'auth.anonymous.subscribe': '["public.>"]',
  'auth.anonymous.publish': '[]',
  'auth.cookie': 'rill_token',
  'hooks.connect.url': 'http://127.0.0.1:3000/rill/connect',
  'hooks.subscribe.url': 'http://127.0.0.1:3000/rill/subscribe',
  'hooks.publish.url': 'http://127.0.0.1:3000/rill/publish',
  'hooks.secret': '"<openssl rand -base64 32>"',
  'hooks.secrets': '["<new secret>", "<old secret>"]',
  'tls.cert': '/etc/rill/cert.pem',
  'tls.key': '/etc/rill/key.pem',
};

/** One YAML scalar or flow collection on one line. */
function yamlValue(value: unknown): string {
  return stringify(value, { collectionStyle: 'flow', lineWidth: 0 }).trimEnd();
}

/** A node of the nested key tree `rill init` writes. */
interface Node {
  children: Map<string, Node>;
  setting?: SettingInfo;
}

/**
 * A commented `rill.yaml` with every setting: the ones in effect by default written with their
 * default (so the file, read back, is the defaults), the ones that are off unless set (auth,
 * TLS) commented out with an example.
 */
export function initYaml(): string {
  const root: Node = { children: new Map() };
  for (const s of configSettings()) {
    let node = root;
    for (const seg of s.path) {
      let next = node.children.get(seg);
      if (!next) node.children.set(seg, (next = { children: new Map() }));
      node = next;
    }
    node.setting = s;
  }
  const written = (n: Node): boolean =>
    n.setting
      ? n.setting.active && n.setting.default !== undefined
      : [...n.children.values()].some(written);
  const lines = [
    '# Rill configuration: rill serve --config rill.yaml (or RILL_CONFIG=rill.yaml).',
    '# Every setting with its default, made by `rill init`. Environment variables (RILL_...) and',
    '# flags win over this file; `rill serve --help` lists them. Durations take ms, s, m, h, d',
    '# ("15s"); sizes take KiB, MiB, GiB ("64KiB"). Lines starting with # are off: remove the #',
    '# to turn one on (any key under auth turns authentication on).',
  ];
  const emit = (node: Node, name: string, depth: number, commented: boolean): void => {
    const pad = '  '.repeat(depth);
    const s = node.setting;
    if (s) {
      const on = !commented && s.active && s.default !== undefined;
      lines.push(...wrap(about(s), `${pad}# `));
      lines.push(`${pad}# env ${s.env}${s.flag ? `, flag ${s.flag}` : ''}`);
      const value = s.default !== undefined ? yamlValue(s.default) : (EXAMPLES[s.key] ?? '');
      lines.push(`${pad}${on ? '' : '# '}${name}:${value === '' ? '' : ` ${value}`}`);
      return;
    }
    const off = commented || !written(node);
    if (depth === 0) lines.push('');
    lines.push(`${pad}${off ? '# ' : ''}${name}:`);
    for (const [k, child] of node.children) emit(child, k, depth + 1, off);
  };
  for (const [k, child] of root.children) {
    if (child.setting) lines.push('');
    emit(child, k, 0, false);
  }
  return `${lines.join('\n')}\n`;
}
