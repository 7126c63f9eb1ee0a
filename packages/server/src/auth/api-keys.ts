import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import {
  API_KEY_HASH_RE,
  API_KEY_PREFIX,
  API_KEY_RE,
  ApiKeyEntrySchema,
  type ApiKeyEntry,
} from '../model/credentials.js';
import { AuthConfigError } from './settings.js';

/** A new API key: `rill_` and 32 random bytes in base64url. Shown once, stored only as a hash. */
export function generateApiKey(): string {
  return API_KEY_PREFIX + randomBytes(32).toString('base64url');
}

/**
 * The stored form of a key: `sha256:<base64url>`. A plain SHA-256 is enough: the key is 256
 * random bits, so there is nothing to guess that a slow hash would protect.
 */
export function hashApiKey(key: string): string {
  return `sha256:${sha256(key).toString('base64url')}`;
}

/** The 32 digest bytes of a stored hash, or throws on anything but `sha256:` + 43 base64url. */
export function parseKeyHash(hash: string): Buffer {
  if (!API_KEY_HASH_RE.test(hash)) {
    throw new AuthConfigError(
      `not an API key hash (expected "sha256:" and 43 base64url characters)`,
    );
  }
  const bytes = Buffer.from(hash.slice('sha256:'.length), 'base64url');
  // 43 base64url characters hold 258 bits; the last two must be zero for a real digest.
  if (bytes.length !== 32 || bytes.toString('base64url') !== hash.slice(7)) {
    throw new AuthConfigError('not an API key hash (not a 32-byte SHA-256 digest)');
  }
  return bytes;
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * The configured API keys, looked up by the key a request presents. The presented key is hashed
 * once and compared with every stored digest in constant time, all of them, whatever matches: how
 * long a lookup takes says nothing about which digest came close.
 */
export class ApiKeyStore {
  private readonly entries: ReadonlyArray<{ entry: ApiKeyEntry; digest: Buffer }>;

  constructor(entries: readonly ApiKeyEntry[]) {
    const names = new Set<string>();
    this.entries = entries.map((entry) => {
      if (names.has(entry.name)) {
        throw new AuthConfigError(`API key name ${JSON.stringify(entry.name)} is used twice`);
      }
      names.add(entry.name);
      let digest: Buffer;
      try {
        digest = parseKeyHash(entry.hash);
      } catch (err) {
        throw new AuthConfigError(`API key ${entry.name}: ${(err as Error).message}`);
      }
      return { entry, digest };
    });
  }

  get size(): number {
    return this.entries.length;
  }

  /** The entry whose hash is the presented key's, or undefined. */
  find(key: string): ApiKeyEntry | undefined {
    if (!API_KEY_RE.test(key)) return undefined;
    const digest = sha256(key);
    let found: ApiKeyEntry | undefined;
    for (const { entry, digest: stored } of this.entries) {
      if (timingSafeEqual(digest, stored) && found === undefined) found = entry;
    }
    return found;
  }

  /** Entries by name, for comparing before and after a reload. */
  byName(): Map<string, ApiKeyEntry> {
    return new Map(this.entries.map(({ entry }) => [entry.name, entry]));
  }
}

const KeysFileSchema = z.array(ApiKeyEntrySchema);

/**
 * Reads an API keys file: a YAML (or, by extension, JSON) list of entries as in `auth.apiKeys`.
 * A missing or empty file is an error rather than "no keys": a file caught between truncation and
 * rewrite must not revoke every key. To remove every key, write `[]`.
 */
export function readApiKeysFile(path: string): ApiKeyEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new AuthConfigError(`Cannot read API keys file ${path}: ${(err as Error).message}`);
  }
  if (text.trim() === '') {
    throw new AuthConfigError(`API keys file ${path} is empty (write [] for no keys)`);
  }
  let value: unknown;
  try {
    value = extname(path) === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new AuthConfigError(`Cannot parse API keys file ${path}: ${(err as Error).message}`);
  }
  const r = KeysFileSchema.safeParse(value);
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      const where = i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`));
      const key = where.join('').replace(/^\./, '') || '(top level)';
      const why =
        i.code === 'unrecognized_keys'
          ? `unknown key(s) ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`
          : i.path.length === 0
            ? 'expected a list of API key entries'
            : i.message;
      return `${key}: ${why}`;
    });
    throw new AuthConfigError(`Invalid API keys file ${path}:\n  ${lines.join('\n  ')}`);
  }
  return r.data;
}
