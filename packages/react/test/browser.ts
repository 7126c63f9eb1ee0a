import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../../server/test/helpers.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

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
