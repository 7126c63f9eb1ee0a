import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/**
 * The dashboard builds into the server package (`packages/server/dist/ui`), which serves it at
 * `/ui/` (api/ui.ts): hashed file names under `assets/`, no inline script or style (the server's
 * CSP allows only its own files).
 */
export default defineConfig({
  base: '/ui/',
  build: {
    outDir: fileURLToPath(new URL('../server/dist/ui', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  oxc: { jsx: { runtime: 'automatic' } },
});
