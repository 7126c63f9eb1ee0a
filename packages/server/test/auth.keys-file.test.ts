/**
 * The API keys file is watched: replacing it (as an editor or `rill keys add --file` does) or
 * rewriting it in place reloads the keys, and a key gone from it is reported revoked. Waits on the
 * authenticator's events, never on time.
 */
import { once } from 'node:events';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Authenticator, generateApiKey, hashApiKey } from '../src/auth/index.js';
import { resolveConfig } from '../src/config.js';
import { tempDir } from '@rill/testkit';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const BACKEND = generateApiKey();
const REPORTS = generateApiKey();
const entry = (name: string, key: string, publish: string[] = []): string =>
  `- { name: ${name}, hash: "${hashApiKey(key)}", publish: ${JSON.stringify(publish)} }\n`;

async function setup(): Promise<{ a: Authenticator; file: string; dir: string }> {
  const dir = tempDir('rill-keys-watch-');
  cleanups.push(() => dir.remove());
  const file = join(dir.path, 'keys.yaml');
  writeFileSync(file, entry('backend', BACKEND, ['orders.>']) + entry('reports', REPORTS));
  const a = await Authenticator.create(resolveConfig({ auth: { apiKeysFile: file } }).auth);
  cleanups.push(() => a.close());
  return { a, file, dir: dir.path };
}

describe('API keys file', () => {
  it('revokes a key removed when the file is replaced', async () => {
    const { a, file, dir } = await setup();
    expect(await a.authenticate({ authorization: `Bearer ${BACKEND}` })).toMatchObject({
      credentialId: 'key:backend',
    });
    const revoked = once(a, 'revoked');
    const tmp = join(dir, '.keys.yaml.tmp');
    writeFileSync(tmp, entry('reports', REPORTS));
    renameSync(tmp, file);
    const [report] = await revoked;
    expect(report).toEqual({ trigger: 'keysFile', revoked: ['key:backend'], changed: [] });
    await expect(a.authenticate({ authorization: `Bearer ${BACKEND}` })).rejects.toMatchObject({
      code: 'unauthorized',
    });
    expect(await a.authenticate({ authorization: `Bearer ${REPORTS}` })).toMatchObject({
      name: 'reports',
    });
  });

  it('picks up a key added and grants changed when the file is rewritten in place', async () => {
    const { a, file } = await setup();
    const added = generateApiKey();
    await expect(a.authenticate({ authorization: `Bearer ${added}` })).rejects.toMatchObject({
      code: 'unauthorized',
    });
    const reloaded = once(a, 'reloaded');
    writeFileSync(
      file,
      entry('backend', BACKEND, ['orders.>', 'invoices.>']) +
        entry('reports', REPORTS) +
        entry('added', added),
    );
    const [report] = await reloaded;
    expect(report).toEqual({ trigger: 'keysFile', revoked: [], changed: ['key:backend'] });
    expect(await a.authenticate({ authorization: `Bearer ${added}` })).toMatchObject({
      name: 'added',
    });
    const backend = await a.authenticate({ authorization: `Bearer ${BACKEND}` });
    expect(backend.grants.canPublish('invoices.1')).toBe(true);
  });

  it('keeps the keys in use when the new file is invalid', async () => {
    const { a, file } = await setup();
    const failed = once(a, 'reloadFailed');
    writeFileSync(file, '- { name: backend, hash: "md5:x" }\n');
    const [{ trigger, error }] = await failed;
    expect(trigger).toBe('keysFile');
    expect(error.message).toMatch(/\[0\]\.hash/);
    expect(await a.authenticate({ authorization: `Bearer ${BACKEND}` })).toMatchObject({
      name: 'backend',
    });
  });
});
