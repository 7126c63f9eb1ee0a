import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import { inject } from 'vitest';
import { REPO } from './helpers.js';

declare module 'vitest' {
  /** What vitest.config.ts provides to every test file of a project. */
  export interface ProvidedContext {
    /** The tier of the running project (unit, integration or browser). */
    testTier: 'unit' | 'integration' | 'browser';
  }
}

/** Debian's Chromium; the browser tests never download one. */
export const CHROMIUM = '/usr/bin/chromium';

/**
 * Launches Debian's Chromium headless through playwright-core, with the flags that keep it off
 * the (closed) network. Throws a clear message when the package is missing: browser tests fail,
 * never skip, without it. Only the browser tier may launch it.
 */
export async function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  // The tier rule: a test that needs Chromium lives in a *.browser.test.ts file.
  const tier = inject('testTier');
  if (tier !== undefined && tier !== 'browser') {
    throw new Error(
      `Chromium launched from the ${tier} tier: tests that need a browser go in ` +
        `*.browser.test.ts files.`,
    );
  }
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM}: the browser tests need the Debian package "chromium" ` +
        `(apt-get install -y chromium; .ci/run installs it); they never download a browser.`,
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
    timeout: 30_000,
  });
}

let launching: Promise<Browser> | undefined;

/** Debian's Chromium, launched once for the file (fails, never skips, when it is missing). */
export function getBrowser(): Promise<Browser> {
  launching ??= launchChromium();
  return launching;
}

export async function closeBrowser(): Promise<void> {
  const b = launching;
  launching = undefined;
  if (b) await (await b).close();
}

/** A page in a fresh context (its own cookies and connections); `close` ends both. */
export async function newPage(): Promise<{ page: Page; close: () => Promise<void> }> {
  const context = await (await getBrowser()).newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  return { page, close: () => context.close() };
}

/** Bundles a page script (React JSX via esbuild, development build: StrictMode double-mounts). */
export async function bundle(entry: string): Promise<string> {
  const out = await build({
    entryPoints: [join(REPO, entry)],
    bundle: true,
    format: 'esm',
    write: false,
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"development"' },
    logLevel: 'silent',
  });
  return out.outputFiles[0]!.text;
}
