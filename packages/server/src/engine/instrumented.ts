import type { EngineMeter } from '../model/meters.js';
import {
  hasHealthCheck,
  hasNodeDirectory,
  hasStorageReport,
  type Engine,
  type HealthCheck,
  type NodeDirectory,
  type StorageReport,
} from './engine.js';

/**
 * The engine with its appends and reads timed and counted (the pending appends, the failures by
 * code). Everything else is the engine's own; the optional capabilities (health, storage use, the
 * node directory) are passed through when the engine has them. Appends and reads happen per
 * request and per catch-up page, never per delivered event.
 */
export function instrumentEngine(
  engine: Engine,
  meter: EngineMeter,
): Engine & Partial<HealthCheck & StorageReport & NodeDirectory> {
  const out: Engine & Partial<HealthCheck & StorageReport & NodeDirectory> = {
    name: engine.name,
    async append(topic, events) {
      meter.pendingAppends++;
      const t0 = performance.now();
      let ok = false;
      try {
        const r = await engine.append(topic, events);
        ok = true;
        return r;
      } catch (err) {
        meter.failed('append', err);
        throw err;
      } finally {
        meter.pendingAppends--;
        meter.onAppend?.((performance.now() - t0) / 1000, ok);
      }
    },
    async read(topic, afterSeq, limit) {
      const t0 = performance.now();
      let ok = false;
      try {
        const r = await engine.read(topic, afterSeq, limit);
        ok = true;
        return r;
      } catch (err) {
        meter.failed('read', err);
        throw err;
      } finally {
        meter.onRead?.((performance.now() - t0) / 1000, ok);
      }
    },
    head: (topic) => engine.head(topic),
    seqAtTime: (topic, ms) => engine.seqAtTime(topic, ms),
    watch: (topic, listener) => engine.watch(topic, listener),
    watchTopics: (listener) => engine.watchTopics(listener),
    listTopics: (options) => engine.listTopics(options),
    close: () => engine.close(),
  };
  if (hasHealthCheck(engine)) out.health = () => engine.health();
  if (hasStorageReport(engine)) out.storageUsage = () => engine.storageUsage();
  if (hasNodeDirectory(engine)) {
    out.putNode = (id, json, ttlMs) => engine.putNode(id, json, ttlMs);
    out.listNodes = () => engine.listNodes();
  }
  return out;
}
