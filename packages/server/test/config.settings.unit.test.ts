/**
 * The configuration as a person meets it: every key of the schema in `rill serve --help` and in
 * the file `rill init` writes (which reads back as the defaults), messages in words instead of the
 * validator's, and "did you mean" for a misspelt key or variable.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { tempDir } from '@rill/testkit';
import {
  ConfigError,
  configFromEnv,
  ConfigSchema,
  readConfigFile,
  resolveConfig,
} from '../src/config.js';
import { descriptionOf, initYaml, settingsHelp } from '../src/cli/settings.js';
import { configSettings } from '../src/config.js';

/**
 * Every leaf key of the schema, found by a walk of its own (not the one under test): objects are
 * descended through their default/prefault/optional wrappers, anything else is a key. A key
 * someone adds to the schema is in this list without a change here.
 */
function schemaKeys(): string[][] {
  const keys: string[][] = [];
  const visit = (t: z.ZodType, path: string[]): void => {
    let s = t;
    while (['default', 'prefault', 'optional', 'nullable'].includes(s.def.type)) {
      s = (s.def as unknown as { innerType: z.ZodType }).innerType;
    }
    if (s instanceof z.ZodObject) {
      for (const [k, v] of Object.entries(s.shape)) visit(v as z.ZodType, [...path, k]);
    } else {
      keys.push(path);
    }
  };
  visit(ConfigSchema as unknown as z.ZodType, []);
  return keys;
}

/** The error message resolving `input` gives (fails when it resolves). */
function refusal(input: unknown): string {
  try {
    resolveConfig(input);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`${JSON.stringify(input)} was accepted`);
}

/** What a validator says when nobody chose the words. */
const RAW = /Invalid input|expected \w+, received|Too (small|big)|Unrecognized key|Invalid option/;

describe('rill init', () => {
  it('writes a file that the config loader reads back as exactly the defaults', () => {
    const dir = tempDir();
    try {
      const file = join(dir.path, 'rill.yaml');
      writeFileSync(file, initYaml());
      const read = readConfigFile(file);
      expect(resolveConfig(read)).toEqual(resolveConfig({}));
      // Not an empty file that trivially equals the defaults: the settings in effect are written.
      expect(read).toMatchObject({ port: 8080, limits: { maxEventBytes: '64KiB' } });
    } finally {
      dir.remove();
    }
  });

  it('has every key of the schema, in effect or commented out under its section', () => {
    const text = initYaml();
    const lines = text.split('\n');
    const parsed = parseYaml(text) as Record<string, unknown>;
    const keys = schemaKeys();
    expect(keys.length).toBeGreaterThan(50);
    for (const path of keys) {
      // Each key is a line `<indent>name:` or `<indent># name:` after its parents' lines.
      let from = 0;
      path.forEach((seg, depth) => {
        const re = new RegExp(`^${'  '.repeat(depth)}(# )?${seg}:( |$)`);
        const at = lines.findIndex((l, i) => i >= from && re.test(l));
        expect(at, `${path.join('.')} in rill init's file`).toBeGreaterThanOrEqual(from);
        from = at + 1;
      });
    }
    // The ones in effect by default are in the parsed file; auth and TLS are off (commented).
    expect(parsed.auth).not.toHaveProperty('jwt');
    expect(parsed).not.toHaveProperty('tls');
    expect(resolveConfig(parsed).auth.jwt).toBeUndefined();
  });

  it('writes each default in the units a person writes', () => {
    const text = initYaml();
    expect(text).toMatch(/^shutdownTimeout: 10s$/m);
    expect(text).toMatch(/^ {2}maxEventBytes: 64KiB$/m);
    expect(text).toMatch(/^ {2}maxAge: 7d$/m);
    expect(text).toMatch(/^# env RILL_PORT, flag --port$/m);
  });
});

describe('rill serve --help', () => {
  it('lists every key of the schema with its default, variable and flag', () => {
    const help = settingsHelp();
    const settings = new Map(configSettings().map((s) => [s.key, s]));
    for (const path of schemaKeys()) {
      const key = path.join('.');
      const s = settings.get(key);
      expect(s, key).toBeDefined();
      const line = help.split('\n').find((l) => l.startsWith(`  ${key} = `));
      expect(line, `${key} in the help`).toBeDefined();
      expect(line).toContain(s!.env);
      if (s!.flag) expect(line).toContain(s!.flag);
    }
    expect(help).toMatch(/^ {2}port = 8080 {3}\(--port, RILL_PORT\)$/m);
    expect(help).toMatch(
      /^ {2}limits\.maxEventBytes = 64KiB {3}\(RILL_LIMITS__MAX_EVENT_BYTES\)$/m,
    );
    expect(help).toMatch(/^ {2}tls\.cert = none {3}\(--tls-cert, RILL_TLS__CERT\)$/m);
  });

  it('says what every key does (a key added to the schema needs its sentence)', () => {
    const missing = configSettings()
      .filter((s) => !descriptionOf(s))
      .map((s) => s.key);
    // Add a line to DESCRIPTIONS in packages/server/src/cli/settings.ts (or .describe() it).
    expect(missing).toEqual([]);
  });

  it('names each variable so that configFromEnv reads it back to the same key', () => {
    for (const s of configSettings()) {
      if (s.kind !== 'integer') continue;
      expect(configFromEnv({ [s.env]: '7' }), s.env).toEqual(
        s.path.reduceRight<unknown>((v, k) => ({ [k]: v }), 7),
      );
    }
  });
});

describe('configuration messages', () => {
  it('--port abc says what a port is and what it got', () => {
    expect(refusal({ port: 'abc' })).toBe(
      'Invalid configuration:\n  port (--port, RILL_PORT): must be a TCP port number from 0 to 65535 (0 picks a free one) (got "abc")',
    );
    expect(refusal({ port: 70000 })).toContain('must be a TCP port number from 0 to 65535');
  });

  it('words every wrong-typed value of every key, never the validator’s own text', () => {
    for (const s of configSettings()) {
      // A value no key takes: a mapping for a scalar or list, a number for a mapping.
      const wrong = s.kind === 'mapping' ? 5 : { x: 1 };
      const input = s.path.reduceRight<unknown>((v, k) => ({ [k]: v }), wrong);
      const msg = refusal(input);
      const line = msg.split('\n').find((l) => l.trim().startsWith(`${s.key} `));
      expect(line, `${s.key}: ${msg}`).toBeDefined();
      expect(line).toMatch(/: must (be|not|have) /);
      expect(line, s.key).not.toMatch(RAW);
    }
  });

  it('says the units and the least a duration or size takes', () => {
    expect(refusal({ sse: { heartbeat: '5ms' } })).toContain(
      'sse.heartbeat (RILL_SSE__HEARTBEAT): must be a duration of at least 100ms such as "15s", "500ms" or "7d" (a plain number is ms) (got "5ms")',
    );
    expect(refusal({ ws: { maxPayload: 'lots' } })).toContain(
      'ws.maxPayload (RILL_WS__MAX_PAYLOAD): must be a size such as "64KiB" or "8MiB"',
    );
    expect(refusal({ host: '' })).toContain('host (--host, RILL_HOST): must not be empty');
  });
});

describe('did you mean', () => {
  it('suggests the close key for an unknown one in a file, at any depth', () => {
    expect(refusal({ prot: 1 })).toMatch(/^ {2}unknown key "prot" \(did you mean "port"\?\)$/m);
    expect(refusal({ limits: { maxEventByte: 1 } })).toMatch(
      /^ {2}limits: unknown key "maxEventByte" \(did you mean "maxEventBytes"\?\)$/m,
    );
    expect(refusal({ sse: { hartbeat: '1s' } })).toContain('(did you mean "heartbeat"?)');
  });

  it('names the section of a key written at the wrong level', () => {
    expect(refusal({ maxEventBytes: 1 })).toContain(
      'unknown key "maxEventBytes" (did you mean limits.maxEventBytes?)',
    );
  });

  it('suggests nothing when nothing is close', () => {
    expect(refusal({ frobnicate: 1 })).toMatch(/unknown key "frobnicate"$/m);
  });

  it('suggests the variable for an unknown RILL_ one', () => {
    const env = (name: string): string => {
      try {
        configFromEnv({ [name]: '1' });
      } catch (err) {
        return (err as Error).message;
      }
      throw new Error(`${name} was accepted`);
    };
    expect(env('RILL_PROT')).toBe(
      'Unknown environment variable RILL_PROT (did you mean RILL_PORT?)',
    );
    expect(env('RILL_LIMITS__MAX_EVENT_BYTE')).toBe(
      'Unknown environment variable RILL_LIMITS__MAX_EVENT_BYTE (did you mean RILL_LIMITS__MAX_EVENT_BYTES?)',
    );
    expect(env('RILL_TOKN')).toContain('(did you mean RILL_TOKEN?)');
    expect(env('RILL_WHOLLY_UNRELATED_THING')).toBe(
      'Unknown environment variable RILL_WHOLLY_UNRELATED_THING',
    );
  });
});
