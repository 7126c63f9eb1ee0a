import { open } from 'lmdb';
const root = open({ path: '/tmp/lmdbx/db', maxDbs: 8, noSubdir: false });
const blocks = root.openDB('blocks', {});
function thenableToPromise(t) { return new Promise((res, rej) => t.then(res, rej)); }
const noop = () => {};
async function txn(fn) {
  const p = root.childTransaction(() => { root.committed.then(noop, noop); return fn(); });
  const f = thenableToPromise(root.flushed);
  try { await Promise.all([p, f]); return 'ok'; }
  catch (e) { const real = await e.commitError?.then(() => null, (x) => x); return 'fail ' + (real?.code ?? e.message); }
}
const val = 'x'.repeat(Number(process.argv[2]));
let n = 0;
for (;;) { const r = await txn(() => { for (let j = 0; j < 10; j++) blocks.putSync(['t', n * 10 + j], { d: val }); }); if (r !== 'ok') { console.log('full after', n, r); break; } n++; blocks.get(['t', 0]); }
console.log('stats', root.getStats().lastPageNumber, JSON.stringify(root.getStats().free ?? {}));
console.log('trim', await txn(() => { for (let j = 0; j < n * 5; j++) blocks.removeSync(['t', j]); }));
let okc = 0, failc = 0;
for (let k = 0; k < 40; k++) { blocks.get(['t', n*10-1]); const r = await txn(() => { for (let j = 0; j < 10; j++) blocks.putSync(['u', k * 10 + j], { d: val }); }); if (r === 'ok') okc++; else failc++; if (k < 6) console.log(k, r); }
console.log('ok', okc, 'fail', failc);
await root.close();
