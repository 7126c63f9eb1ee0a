/**
 * TLS as an operator meets it with `rill serve`: the flags, environment and config errors, the
 * certificate reloaded on SIGHUP (and a bad one refused), a graceful shutdown that ends HTTP/2
 * sessions with GOAWAY, and the connection budget counting TLS connections and HTTP/2 sessions.
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, resolveConfig } from '../src/config.js';
import { serveConfig } from '../src/cli/serve.js';
import { spawnLogged, within, type LogLine, type LoggedServer } from './cli-ops-helpers.js';
import { systemBinary, tempDir, thrown, useCleanups, waitFor } from '@rill/testkit';
import {
  h2Connect,
  h2Request,
  openH2Sse,
  selfSignedCert,
  servedFingerprint,
  type CertFiles,
} from '@rill/testkit/tls';

const { cleanups } = useCleanups();

/** A temp directory with certificates `a`, `b`, … made in it. */
function certs(...names: string[]): { dir: string; of: Record<string, CertFiles> } {
  const dir = tempDir('rill-cli-tls-');
  cleanups.push(() => dir.remove());
  const of: Record<string, CertFiles> = {};
  for (const n of names) of[n] = selfSignedCert(dir.path, n);
  return { dir: dir.path, of };
}

function serve(args: string[], env: NodeJS.ProcessEnv = {}, wrap: string[] = []): LoggedServer {
  const s = spawnLogged(['--engine', 'memory', '--port', '0', ...args], env, wrap);
  cleanups.push(() => s.kill());
  return s;
}

async function h2(url: string): ReturnType<typeof h2Connect> {
  const s = await h2Connect(url);
  cleanups.push(() => void s.destroy());
  return s;
}

function configMessage(fn: () => unknown): string {
  const err = thrown(fn);
  expect(err).toBeInstanceOf(ConfigError);
  return (err as Error).message;
}

describe('TLS configuration', () => {
  it('takes the files from flags or the environment, both or neither', async () => {
    const { of } = certs('a');
    const a = of.a!;
    expect(serveConfig({ tlsCert: a.cert, tlsKey: a.key }, {})).toMatchObject({
      tls: { cert: a.cert, key: a.key },
    });
    expect(
      resolveConfig(serveConfig({}, { RILL_TLS__CERT: a.cert, RILL_TLS__KEY: a.key })).tls,
    ).toEqual({ cert: a.cert, key: a.key });
    expect(resolveConfig({}).tls).toEqual({});
    expect(configMessage(() => serveConfig({ tlsCert: a.cert }, {}))).toContain(
      'tls.key (--tls-key, RILL_TLS__KEY): required with tls.cert (give both or neither)',
    );
    expect(configMessage(() => serveConfig({}, { RILL_TLS__KEY: a.key }))).toContain(
      'tls.cert (--tls-cert, RILL_TLS__CERT): required with tls.key',
    );
  });

  it('names the file that cannot be read, parsed or used', () => {
    const { dir, of } = certs('a', 'b');
    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a certificate\n');
    const missing = join(dir, 'missing.pem');
    expect(configMessage(() => resolveConfig({ tls: { cert: missing, key: of.a!.key } }))).toMatch(
      /tls\.cert \(--tls-cert, RILL_TLS__CERT\): cannot read it: ENOENT/,
    );
    expect(configMessage(() => resolveConfig({ tls: { cert: of.a!.cert, key: missing } }))).toMatch(
      /tls\.key \(--tls-key, RILL_TLS__KEY\): cannot read it: ENOENT/,
    );
    expect(configMessage(() => resolveConfig({ tls: { cert: garbage, key: of.a!.key } }))).toMatch(
      /tls\.cert \(--tls-cert, RILL_TLS__CERT\): not a PEM certificate/,
    );
    expect(configMessage(() => resolveConfig({ tls: { cert: of.a!.cert, key: garbage } }))).toMatch(
      /tls\.key \(--tls-key, RILL_TLS__KEY\): not an unencrypted PEM private key/,
    );
    // A certificate and the key of another.
    expect(
      configMessage(() => resolveConfig({ tls: { cert: of.a!.cert, key: of.b!.key } })),
    ).toMatch(
      /tls\.key \(--tls-key, RILL_TLS__KEY\): not the private key of the certificate in tls\.cert/,
    );
  });

  it('rill serve exits 2 with the message', async () => {
    const { of } = certs('a');
    const s = serve(['--tls-cert', of.a!.cert]);
    expect(await within(s.exited, 20_000, 'rill to exit')).toBe(2);
    expect(s.stderr()).toContain('tls.key (--tls-key, RILL_TLS__KEY): required with tls.cert');
  });
});

describe('SIGHUP', () => {
  const reloaded = (fp: string) => (l: LogLine) =>
    l.msg === 'TLS certificate reloaded' && l.fingerprint === fp;
  const failed = (key: string) => (l: LogLine) =>
    l.level === 50 && /^TLS reload failed/.test(l.msg ?? '') && l.setting === key;

  it('reloads the certificate and key; a bad pair keeps the old one', async () => {
    const { dir, of } = certs('a', 'b', 'c');
    // The files the server is told about; renewed in place, as certbot and the like do.
    const cert = join(dir, 'live.crt');
    const key = join(dir, 'live.key');
    copyFileSync(of.a!.cert, cert);
    copyFileSync(of.a!.key, key);
    const s = serve(['--tls-cert', cert, '--tls-key', key]);
    const url = await s.listening;
    expect(url).toMatch(/^https:/);
    expect(await servedFingerprint(url)).toBe(of.a!.fingerprint);
    // A stream opened before the reload goes on after it.
    const session = await h2(url);
    const st = await openH2Sse(session, '/v1/topics/hup/stream');

    copyFileSync(of.b!.cert, cert);
    copyFileSync(of.b!.key, key);
    s.proc.kill('SIGHUP');
    const line = await s.waitLog(reloaded(of.b!.fingerprint));
    expect(line).toMatchObject({ level: 30, previousFingerprint: of.a!.fingerprint, cert, key });
    expect(await servedFingerprint(url)).toBe(of.b!.fingerprint);
    // New connections still speak HTTP/2.
    const after = await h2(url);
    expect((await h2Request(after, 'GET', '/healthz')).status).toBe(200);

    // Broken: not a certificate at all.
    writeFileSync(cert, '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
    s.proc.kill('SIGHUP');
    const bad = await s.waitLog(failed('tls.cert'));
    expect(bad).toMatchObject({ file: cert, fingerprint: of.b!.fingerprint });
    expect(await servedFingerprint(url)).toBe(of.b!.fingerprint);

    // A certificate with the key of another.
    copyFileSync(of.c!.cert, cert);
    s.proc.kill('SIGHUP');
    await s.waitLog(failed('tls.key'));
    expect(await servedFingerprint(url)).toBe(of.b!.fingerprint);

    expect(s.proc.exitCode).toBeNull();
    const pub = await h2Request(session, 'POST', '/v1/topics/hup/events', { data: 'after' });
    expect(pub.status).toBe(201);
    await st.until(() => st.events().some((e) => e.data === 'after'));
  });
});

describe('SIGTERM over TLS', () => {
  it('ends HTTP/2 streams and sessions (GOAWAY) and connections mid-handshake, and exits 0', async () => {
    const { of } = certs('a');
    const s = serve(['--tls-cert', of.a!.cert, '--tls-key', of.a!.key]);
    const url = await s.listening;
    const streaming = await h2(url);
    const idle = await h2(url);
    const goaways: number[] = [];
    streaming.on('goaway', (code: number) => goaways.push(code));
    idle.on('goaway', (code: number) => goaways.push(code));
    const st = await openH2Sse(streaming, '/v1/topics/term/stream');
    expect((await h2Request(idle, 'GET', '/readyz')).status).toBe(200);
    // A TCP connection that never starts its TLS handshake.
    const u = new URL(url);
    const rawSocket = net.connect(Number(u.port), u.hostname);
    rawSocket.on('error', () => undefined);
    cleanups.push(() => void rawSocket.destroy());
    await new Promise<void>((r) => rawSocket.once('connect', () => r()));
    const rawClosed = new Promise<void>((r) => rawSocket.once('close', () => r()));

    s.proc.kill('SIGTERM');
    // Well within the shutdown timeout (10 s), after which it would exit 1.
    expect(await within(s.exited, 9_000, 'rill to exit after SIGTERM')).toBe(0);
    await within(rawClosed, 1_000, 'the raw connection to be closed');
    await st.ended;
    expect(goaways).toEqual([0, 0]);
    const err = st.frames.find((f) => f.event === 'error');
    expect(JSON.parse(err!.data!)).toMatchObject({ code: 'shutting_down' });
    expect(s.lines().some((l) => l.msg === 'stopped')).toBe(true);
  });
});

describe('the connection budget over TLS', () => {
  const FILE_LIMIT = 300;

  it('counts each TLS connection once, handshake or not, and an HTTP/2 session once for all its streams', async () => {
    const { of } = certs('a');
    const s = serve(['--tls-cert', of.a!.cert, '--tls-key', of.a!.key], {}, [
      systemBinary('prlimit'),
      `--nofile=${FILE_LIMIT}:${FILE_LIMIT}`,
      '--',
    ]);
    const url = await s.listening;
    const budget = await s.waitLog((l) => typeof l.maxStreams === 'number');
    const maxStreams = budget.maxStreams as number;
    expect(maxStreams).toBeGreaterThan(100);

    // One session, 20 streams: one connection.
    const session = await h2(url);
    const streams = await Promise.all(
      Array.from({ length: 20 }, () => openH2Sse(session, '/v1/topics/cap.h2/stream')),
    );
    expect(streams.map((x) => x.status())).toEqual(Array(20).fill(200));

    // Then as many TCP connections as there are stream slots, none past the TLS handshake's start:
    // with the session that is one connection more than streams may use.
    const u = new URL(url);
    const held: net.Socket[] = [];
    for (let i = 0; i < maxStreams; i++) {
      const sock = net.connect(Number(u.port), u.hostname);
      sock.on('error', () => undefined);
      cleanups.push(() => void sock.destroy());
      held.push(sock);
    }
    await Promise.all(held.map((h) => new Promise((r) => h.once('connect', r))));
    /** Whether a stream would be refused now (HEAD: the stream's headers, or the refusal). */
    const refusing = async (): Promise<boolean> =>
      (await h2Request(session, 'HEAD', '/v1/topics/cap.h2/stream')).status === 503;
    // The server registers the held connections as it accepts them.
    await waitFor(refusing);
    const refused = await h2Request(session, 'GET', '/v1/topics/cap.h2/stream');
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'too_many_connections' } });
    expect(refused.headers['retry-after']).toBe('1');
    // The session stays open for what the reserve is for: publishes reach the open streams.
    const pub = await h2Request(session, 'POST', '/v1/topics/cap.h2/events', { data: 'full' });
    expect(pub.status).toBe(201);
    await Promise.all(streams.map((x) => x.until(() => x.events().length === 1)));

    // One connection fewer: exactly the stream slots, 20 streams open on the session among them.
    held.pop()!.destroy();
    await waitFor(async () => !(await refusing()));
    const more = await openH2Sse(session, '/v1/topics/cap.h2/stream');
    expect(more.status()).toBe(200);
    expect(s.lines().filter((l) => l.level >= 50)).toEqual([]);
  });
});
