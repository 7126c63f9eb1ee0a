import { Redis } from 'ioredis';
import type { NodeRecord, SyncTransport } from './shared.js';

/**
 * One exchange on Redis, atomic: each subject is a hash `<prefix>:limits:<subject>` with a field
 * per node (`<ms> <consumed×4> <connections> <subscriptions>`, the time from Redis' clock so the
 * nodes' clocks do not matter). The script writes this node's field, drops fields not refreshed
 * within `fresh` ms (a node that died), and returns the other nodes' fields.
 */
const EXCHANGE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[1]
local fresh = tonumber(ARGV[2])
local out = {}
for i, k in ipairs(KEYS) do
  redis.call('HSET', k, node, now .. ' ' .. ARGV[i + 2])
  redis.call('PEXPIRE', k, fresh * 2)
  local all = redis.call('HGETALL', k)
  local keep = {}
  for j = 1, #all, 2 do
    local f, v = all[j], all[j + 1]
    local at = tonumber(string.match(v, '^(%d+)'))
    if at == nil or now - at > fresh then
      redis.call('HDEL', k, f)
    elseif f ~= node then
      keep[#keep + 1] = f
      keep[#keep + 1] = v
    end
  end
  out[i] = keep
end
return out
`;

/** Subjects per script call: bounds one call's work and reply. */
const CHUNK = 500;

interface ExchangeCommand {
  rillLimits(...args: string[]): Promise<string[][]>;
}

/** Shared limits through Redis (the redis engine's `redis.url` and `redis.prefix`). */
export class RedisSync implements SyncTransport {
  private readonly redis: Redis & ExchangeCommand;

  constructor(
    url: string,
    private readonly prefix: string,
    /** A node's records count this long after its last exchange, ms. */
    private readonly fresh: number,
  ) {
    this.redis = new Redis(url, {
      connectTimeout: 5_000,
      // An exchange that cannot run now is skipped: the next one sends the totals anyway.
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      commandTimeout: 2_000,
      retryStrategy: (times) => Math.min(50 * times, 1_000),
    }) as Redis & ExchangeCommand;
    this.redis.on('error', () => undefined);
    this.redis.defineCommand('rillLimits', { lua: EXCHANGE });
  }

  async exchange(
    node: string,
    mine: Map<string, NodeRecord>,
  ): Promise<Map<string, Map<string, NodeRecord>>> {
    const out = new Map<string, Map<string, NodeRecord>>();
    const ids = [...mine.keys()];
    for (let at = 0; at < ids.length; at += CHUNK) {
      const chunk = ids.slice(at, at + CHUNK);
      const keys = chunk.map((id) => `${this.prefix}:limits:${id}`);
      const values = chunk.map((id) => encode(mine.get(id)!));
      const reply = await this.redis.rillLimits(
        String(chunk.length),
        ...keys,
        node,
        String(this.fresh),
        ...values,
      );
      chunk.forEach((id, i) => {
        const fields = reply[i] ?? [];
        const nodes = new Map<string, NodeRecord>();
        for (let j = 0; j + 1 < fields.length; j += 2) {
          const r = decode(fields[j + 1]!);
          if (r) nodes.set(fields[j]!, r);
        }
        out.set(id, nodes);
      });
    }
    return out;
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

function encode(r: NodeRecord): string {
  return `${r.consumed.join(' ')} ${r.connections} ${r.subscriptions} ${r.age}`;
}

/** A field's value after its timestamp: four consumptions, connections, subscriptions, age. */
function decode(v: string): NodeRecord | null {
  const n = v.split(' ').slice(1).map(Number);
  if (n.length !== 7 || !n.every(Number.isFinite)) return null;
  return {
    consumed: [n[0]!, n[1]!, n[2]!, n[3]!],
    connections: n[4]!,
    subscriptions: n[5]!,
    age: n[6]!,
  };
}
