/**
 * The server's layers, each importing only the layers before it (docs/architecture.md):
 * model → engine → fanout → wire → net → auth → limits / presence / webhooks / hooks / cluster → api → server.ts / cli. `config.ts` sits beside
 * the engine contract: it reads the model's limits and the engine's defaults and everything above
 * reads it. No import cycles anywhere in the repository's packages.
 */
const src = '^packages/server/src/';
/** A rule that `layer` imports only from `allowed` (folders under src/, or root files). */
function layer(name, from, allowed) {
  return {
    name: `layer-${name}`,
    severity: 'error',
    comment: `${from} may import only ${allowed.join(', ')} (docs/architecture.md, "Layers")`,
    from: { path: `${src}${from}` },
    to: { path: src, pathNot: `${src}(${allowed.join('|')})` },
  };
}

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Modules that import each other, directly or through others',
      from: {},
      to: { circular: true },
    },
    layer('model', 'model/', ['model/']),
    layer('engine', 'engine/', ['model/', 'engine/']),
    layer('config', 'config\\.ts$', ['model/', 'engine/engine\\.ts$', 'config\\.ts$']),
    layer('fanout', 'fanout/', ['model/', 'engine/engine\\.ts$', 'fanout/']),
    layer('wire', 'wire/', ['model/', 'fanout/', 'wire/']),
    layer('net', 'net/', ['model/', 'fanout/', 'wire/', 'net/']),
    layer('auth', 'auth/', ['model/', 'auth/']),
    layer('limits', 'limits/', ['model/', 'auth/', 'limits/']),
    layer('presence', 'presence/', ['model/', 'presence/']),
    layer('webhooks', 'webhooks/', ['model/', 'engine/engine\\.ts$', 'config\\.ts$', 'webhooks/']),
    layer('hooks', 'hooks/', ['model/', 'auth/', 'hooks/']),
    layer('cluster', 'cluster/', ['model/', 'cluster/']),
    layer('api', 'api/', [
      'model/',
      'engine/engine\\.ts$',
      'fanout/',
      'wire/',
      'net/',
      'auth/',
      'limits/',
      'presence/',
      'hooks/',
      'cluster/',
      'api/',
      'config\\.ts$',
    ]),
    {
      name: 'cli-on-top',
      severity: 'error',
      comment: 'Only the CLI imports the CLI',
      from: { pathNot: [`${src}cli/`, '^packages/[^/]+/test/'] },
      to: { path: `${src}cli/` },
    },
    {
      name: 'packages-through-their-entry',
      severity: 'error',
      comment:
        "A package's code reaches another package only through its published entry points, never ../other/src",
      from: { path: '^packages/(client|server|react|bench)/src/' },
      to: { path: '^packages/([^/]+)/src/', pathNot: '^packages/$1/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.base.json' },
  },
};
