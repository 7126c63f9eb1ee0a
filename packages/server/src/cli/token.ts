import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { SignJWT, type JWTPayload } from 'jose';
import { algorithmsFor } from '../auth/jwt.js';
import { AuthConfigError, type JwtSettings } from '../auth/settings.js';
import { ConfigError, parseDuration, resolveConfig } from '../config.js';
import { isHmacAlgorithm, JWT_ALGORITHMS, type JwtAlgorithm } from '../model/credentials.js';
import { isValidPattern } from '../model/topic.js';
import { EXIT, serveConfig } from './serve.js';

interface TokenFlags {
  sub: string;
  subscribe: string[];
  publish: string[];
  admin?: boolean;
  ttl: string;
  kid?: string;
  privateKey?: string;
  alg?: string;
  config?: string;
}

/** Adds a repeated option's values to a list. */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function registerToken(program: Command): void {
  program
    .command('token')
    .description(
      'print a signed JWT for a subject and its grants, signed with the configured secret or --private-key',
    )
    .requiredOption('--sub <subject>', 'the subject (sub claim)')
    .option(
      '--subscribe <pattern>',
      'topic or pattern it may subscribe to and read (repeatable)',
      collect,
      [],
    )
    .option('--publish <pattern>', 'topic or pattern it may publish to (repeatable)', collect, [])
    .option('--admin', 'allow everything')
    .option('--ttl <duration>', 'lifetime, such as 15m, 1h, 7d', '1h')
    .option('--kid <kid>', "the key's kid: picks the configured secret, and goes in the header")
    .option(
      '--private-key <file>',
      'sign with this PEM private key (RS*, PS*, ES*, EdDSA) instead of a secret',
    )
    .option('--alg <alg>', 'signing algorithm (default: from the key)')
    .option('--config <file>', 'config file, JSON or YAML (env RILL_CONFIG)')
    .action(async (flags: TokenFlags) => {
      process.exitCode = await token(flags);
    });
}

async function token(flags: TokenFlags): Promise<number> {
  try {
    process.stdout.write(`${await mint(flags, process.env)}\n`);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof ConfigError || err instanceof AuthConfigError) {
      process.stderr.write(`rill: ${err.message}\n`);
      return EXIT.config;
    }
    throw err;
  }
}

/** The signed token `flags` ask for, with the configuration of `env` (and `--config`). */
export async function mint(flags: TokenFlags, env: NodeJS.ProcessEnv): Promise<string> {
  const jwt = resolveConfig(serveConfig({ config: flags.config }, env)).auth.jwt;
  for (const p of [...flags.subscribe, ...flags.publish]) {
    if (!isValidPattern(p)) throw new ConfigError(`${JSON.stringify(p)} is not a topic or pattern`);
  }
  const ttl = parseDuration(flags.ttl);
  if (ttl <= 0) throw new ConfigError('--ttl must be above 0');
  const maxLifetime = jwt?.maxLifetime ?? DEFAULT_MAX_LIFETIME;
  if (ttl > maxLifetime) {
    throw new ConfigError(
      `--ttl ${flags.ttl} is above auth.jwt.maxLifetime (${maxLifetime / 1000} s): the server would refuse the token`,
    );
  }
  const signer = flags.privateKey === undefined ? secretSigner(jwt, flags) : keySigner(flags);

  const now = Math.floor(Date.now() / 1000);
  const grants: Record<string, unknown> = {};
  if (flags.subscribe.length > 0) grants.subscribe = flags.subscribe;
  if (flags.publish.length > 0) grants.publish = flags.publish;
  if (flags.admin) grants.admin = true;
  const claims: JWTPayload = {
    sub: flags.sub,
    iat: now,
    exp: now + Math.ceil(ttl / 1000),
    rill: grants,
  };
  if (jwt?.audience !== undefined) claims.aud = jwt.audience;
  if (jwt?.issuer !== undefined)
    claims.iss = Array.isArray(jwt.issuer) ? jwt.issuer[0] : jwt.issuer;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: signer.alg, typ: 'JWT', ...(signer.kid ? { kid: signer.kid } : {}) })
    .sign(signer.key);
}

/** The configuration's default `auth.jwt.maxLifetime`, for tokens minted without one. */
const DEFAULT_MAX_LIFETIME = 24 * 3600_000;

interface Signer {
  alg: JwtAlgorithm;
  kid: string | undefined;
  key: KeyObject | Uint8Array;
}

/** The configured secret: `--kid`'s, else the `secret` shortcut, else the only one. */
function secretSigner(jwt: JwtSettings | undefined, flags: TokenFlags): Signer {
  const secrets = [
    ...(jwt?.secret === undefined
      ? []
      : [{ kid: undefined, secret: jwt.secret, algorithms: undefined }]),
    ...(jwt?.keys ?? []).filter((k) => k.secret !== undefined),
  ];
  const chosen =
    flags.kid !== undefined
      ? secrets.find((k) => k.kid === flags.kid)
      : (secrets.find((k) => k.kid === undefined) ??
        (secrets.length === 1 ? secrets[0] : undefined));
  if (!chosen) {
    throw new ConfigError(
      secrets.length === 0
        ? 'no secret to sign with: set auth.jwt.secret (a config file with --config, or RILL_AUTH__JWT__SECRET), or give --private-key'
        : flags.kid !== undefined
          ? `no configured secret has kid ${JSON.stringify(flags.kid)}`
          : `several secrets are configured: pick one with --kid (${secrets.map((k) => k.kid).join(', ')})`,
    );
  }
  const allowed = chosen.algorithms ?? ['HS256'];
  const alg = algorithm(flags.alg, allowed);
  if (!allowed.includes(alg)) {
    throw new ConfigError(`--alg ${alg} is not among the key's algorithms (${allowed.join(', ')})`);
  }
  return { alg, kid: flags.kid ?? chosen.kid, key: new TextEncoder().encode(chosen.secret) };
}

/** `--private-key`: a PEM private key, and an algorithm that fits it. */
function keySigner(flags: TokenFlags): Signer {
  let key: KeyObject;
  try {
    key = createPrivateKey(readFileSync(flags.privateKey!, 'utf8'));
  } catch (err) {
    throw new ConfigError(`--private-key ${flags.privateKey}: ${(err as Error).message}`);
  }
  const fits = algorithmsFor(createPublicKey(key), `--private-key ${flags.privateKey}`);
  const alg = algorithm(flags.alg, fits);
  if (!fits.includes(alg) || isHmacAlgorithm(alg)) {
    throw new ConfigError(`--alg ${alg} does not fit this key (it allows ${fits.join(', ')})`);
  }
  return { alg, kid: flags.kid, key };
}

function algorithm(flag: string | undefined, allowed: readonly JwtAlgorithm[]): JwtAlgorithm {
  if (flag === undefined) return allowed[0]!;
  if (!(JWT_ALGORITHMS as readonly string[]).includes(flag)) {
    throw new ConfigError(`--alg ${flag}: expected one of ${JWT_ALGORITHMS.join(', ')}`);
  }
  return flag as JwtAlgorithm;
}
