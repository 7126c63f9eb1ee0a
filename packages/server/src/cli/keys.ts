import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import type { Command } from 'commander';
import { isSeq, parseDocument } from 'yaml';
import { generateApiKey, hashApiKey, readApiKeysFile } from '../auth/api-keys.js';
import { AuthConfigError } from '../auth/settings.js';
import { API_KEY_NAME_RE, type ApiKeyEntry } from '../model/credentials.js';
import { isValidPattern } from '../model/topic.js';
import { EXIT } from './serve.js';
import { collect } from './token.js';

interface KeysAddFlags {
  publish: string[];
  subscribe: string[];
  admin?: boolean;
  file?: string;
}

class UsageError extends Error {}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('manage API keys');
  keys
    .command('add')
    .description(
      'make a new API key: prints the key (shown this once) and the entry to configure, which holds only its hash',
    )
    .argument('<name>', 'name of the key, in logs and its credential id key:<name>')
    .option('--publish <pattern>', 'topic or pattern it may publish to (repeatable)', collect, [])
    .option(
      '--subscribe <pattern>',
      'topic or pattern it may subscribe to and read (repeatable)',
      collect,
      [],
    )
    .option('--admin', 'allow everything')
    .option(
      '--file <file>',
      'add the entry to this API keys file (auth.apiKeysFile) instead of printing it',
    )
    .action((name: string, flags: KeysAddFlags) => {
      process.exitCode = add(name, flags);
    });
}

function add(name: string, flags: KeysAddFlags): number {
  try {
    if (!API_KEY_NAME_RE.test(name)) {
      throw new UsageError(
        `key name ${JSON.stringify(name)}: expected 1-64 characters of [A-Za-z0-9_.-]`,
      );
    }
    for (const p of [...flags.publish, ...flags.subscribe]) {
      if (!isValidPattern(p))
        throw new UsageError(`${JSON.stringify(p)} is not a topic or pattern`);
    }
    const key = generateApiKey();
    const entry: ApiKeyEntry = {
      name,
      hash: hashApiKey(key),
      publish: flags.publish,
      subscribe: flags.subscribe,
      admin: flags.admin ?? false,
    };
    if (flags.file !== undefined) {
      appendToKeysFile(flags.file, entry);
      process.stdout.write(`${key}\n`);
      process.stderr.write(
        `rill: added key ${name} to ${flags.file}; the key above is shown only this once\n`,
      );
    } else {
      process.stdout.write(
        `${key}\n` +
          `# The key above is shown only this once. Add this entry to auth.apiKeys or the keys file:\n` +
          `- ${flowEntry(entry)}\n`,
      );
    }
    return EXIT.ok;
  } catch (err) {
    if (err instanceof UsageError || err instanceof AuthConfigError) {
      process.stderr.write(`rill: ${err.message}\n`);
      return EXIT.config;
    }
    throw err;
  }
}

/** One entry as a YAML flow mapping, one line (also valid in a YAML list). */
function flowEntry(e: ApiKeyEntry): string {
  const list = (xs: string[]): string => `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`;
  return (
    `{ name: ${JSON.stringify(e.name)}, hash: ${JSON.stringify(e.hash)}, ` +
    `publish: ${list(e.publish)}, subscribe: ${list(e.subscribe)}, admin: ${e.admin} }`
  );
}

/**
 * Adds `entry` to the keys file (made when missing), keeping its comments, and replaces the file
 * in one rename so that a server watching it never reads half of it.
 */
function appendToKeysFile(file: string, entry: ApiKeyEntry): void {
  const exists = existsSync(file);
  if (exists && readApiKeysFile(file).some((e) => e.name === entry.name)) {
    throw new UsageError(`${file} already has a key named ${entry.name}`);
  }
  let text: string;
  if (extname(file) === '.json') {
    const entries = exists ? (JSON.parse(readFileSync(file, 'utf8')) as unknown[]) : [];
    text = `${JSON.stringify([...entries, entry], null, 2)}\n`;
  } else if (exists) {
    const doc = parseDocument(readFileSync(file, 'utf8'));
    if (!isSeq(doc.contents)) throw new UsageError(`${file} is not a list of keys`);
    doc.add(doc.createNode(entry, { flow: true }));
    text = doc.toString();
  } else {
    text = `- ${flowEntry(entry)}\n`;
  }
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}
