import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

let launching: Promise<Browser> | undefined;

/**
 * Debian's Chromium through playwright-core (never a downloaded browser). Checked on use, so a
 * missing Chromium fails the tests that need it instead of skipping them.
 */
export function getBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM}: the browser tests need the Debian package "chromium" ` +
        `(apt-get install chromium); they never download a browser.`,
    );
  }
  launching ??= chromium.launch({
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
    ],
    timeout: 30_000,
  });
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
