/**
 * The Lua scripts of the redis engine. Each runs atomically inside Redis, which is what makes a
 * batch's seqs contiguous and its idempotency checks race-free across any number of nodes.
 *
 * Per topic (all keys share the `{topic}` hash tag):
 * - `m` hash: `e` epoch, `c` created, `f` firstSeq, `l` lastSeq, `t` lastTime, `o` the bytes of
 *   events appended in the epoch (data + type + key + trace; Lua strings are bytes)
 * - `s` stream: entry id `<seq>-0`, fields `t` time (always first), `o` the bytes appended before
 *   this event (always second; entries written before it existed count as offset 0), `d` data,
 *   `y` type, `k` key, `r` trace context (`encodeTrace` in model/trace.ts)
 * - `k` hash: idempotency key → `seq:time:expiry`; `x` zset: key by expiry, for cleanup
 * Shared: `topics` zset (names, score 0, listed by lex range), `new` stream of created topics.
 *
 * **Redis at `maxmemory`.** With `maxmemory-policy noeviction`, Redis refuses a script's first
 * command that may grow memory (OOM) but lets the rest of a script run once it has written
 * anything. The append script's first write is therefore always one that adds (the topic's meta,
 * an idempotency key or an entry): a full Redis refuses the whole append before anything changed,
 * and the client gets `insufficient_storage`. The trim script's first write removes (XTRIM), so
 * age retention still frees memory at the limit.
 */

const COMMON = `
local function fmt(n) return string.format('%d', n) end

-- The bytes appended before an entry (0 for entries from before offsets were stored).
local function offsetOf(entry)
  local f = entry[2]
  if f[3] == 'o' then return tonumber(f[4]) end
  return 0
end

-- First seq kept under the count, age and byte limits (total: the bytes appended in the epoch);
-- drops everything before it.
local function trim(stream, first, last, maxEvents, maxAge, maxBytes, total, now)
  local cut = first
  if maxEvents > 0 and last - maxEvents + 1 > cut then cut = last - maxEvents + 1 end
  if maxAge > 0 and cut <= last then
    local oldest = now - maxAge
    local e = redis.call('XRANGE', stream, fmt(cut) .. '-0', '+', 'COUNT', 1)
    if e[1] and tonumber(e[1][2][2]) < oldest then
      -- Time never decreases within a topic: binary search over seq.
      local lo, hi = cut, last + 1
      while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        local m = redis.call('XRANGE', stream, fmt(mid) .. '-0', '+', 'COUNT', 1)
        if m[1] and tonumber(m[1][2][2]) < oldest then lo = mid + 1 else hi = mid end
      end
      cut = lo
    end
  end
  if maxBytes > 0 and cut <= last and total - maxBytes > 0 then
    local target = total - maxBytes
    local e = redis.call('XRANGE', stream, fmt(cut) .. '-0', '+', 'COUNT', 1)
    if e[1] and offsetOf(e[1]) < target then
      -- Offsets never decrease within a topic: binary search over seq for the first one kept.
      local lo, hi = cut, last + 1
      while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        local m = redis.call('XRANGE', stream, fmt(mid) .. '-0', '+', 'COUNT', 1)
        if m[1] and offsetOf(m[1]) < target then lo = mid + 1 else hi = mid end
      end
      cut = lo
    end
  end
  if cut > first then redis.call('XTRIM', stream, 'MINID', fmt(cut) .. '-0') end
  return cut
end
`;

/**
 * KEYS: meta, stream, keys, expiry, topics, new.
 * ARGV: topic, now, windowMs, maxEvents, maxAgeMs, newEpoch, channel, newChannel, payloadLimit,
 * maxBytes, count, then type, key, data, trace per event ('' = absent).
 * Returns { epoch, created, { seq, time, dup, fields|false } per event }.
 */
export const APPEND = `${COMMON}
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local maxEvents = tonumber(ARGV[4])
local maxAge = tonumber(ARGV[5])
local maxBytes = tonumber(ARGV[10])
local n = tonumber(ARGV[11])
local meta = redis.call('HMGET', KEYS[1], 'e', 'f', 'l', 't', 'o', 'rm', 'ra', 'rb')
local epoch = meta[1]
-- The topic's own retention (setRetention) wins over the configured one.
if epoch then
  if meta[6] then maxEvents = tonumber(meta[6]) end
  if meta[7] then maxAge = tonumber(meta[7]) end
  if meta[8] then maxBytes = tonumber(meta[8]) end
end
local first, last, lastTime, total
-- A log whose metadata or stream vanished (FLUSHALL, a deleted key, eviction) starts over under
-- a new epoch, so no cursor from the old one is trusted.
if epoch and tonumber(meta[3]) > 0 and redis.call('EXISTS', KEYS[2]) == 0 then epoch = false end
local created = 0
if not epoch then
  epoch = ARGV[6]
  created = 1
  first, last, lastTime, total = 1, 0, 0, 0
  -- The first write: at maxmemory it is refused before anything changed (see above).
  redis.call('HSET', KEYS[1], 'e', epoch, 'c', fmt(now), 'f', 1, 'l', 0, 't', 0, 'o', 0)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('ZADD', KEYS[5], 0, ARGV[1])
  local id = redis.call('XADD', KEYS[6], 'MAXLEN', '~', 100000, '*', 't', ARGV[1])
  redis.call('PUBLISH', ARGV[8], id .. ' ' .. ARGV[1])
else
  first, last, lastTime = tonumber(meta[2]), tonumber(meta[3]), tonumber(meta[4])
  total = tonumber(meta[5]) or 0
end

local time = now
if lastTime > time then time = lastTime end
local out = { epoch, created }
local from = last + 1
local fresh = {}
local bytes = 0
local keyed = false
for i = 0, n - 1 do
  local y, k, d, r = ARGV[12 + i * 4], ARGV[13 + i * 4], ARGV[14 + i * 4], ARGV[15 + i * 4]
  local dup = false
  if k ~= '' then
    local rec = redis.call('HGET', KEYS[3], k)
    if rec then
      local s, t, e = string.match(rec, '^(%d+):(%d+):(%d+)$')
      if tonumber(e) > now then
        local orig = redis.call('XRANGE', KEYS[2], s .. '-0', s .. '-0')
        out[#out + 1] = { tonumber(s), tonumber(t), 1, orig[1] and orig[1][2] or false }
        dup = true
      end
    end
  end
  if not dup then
    last = last + 1
    local fields = { 't', fmt(time), 'o', fmt(total), 'd', d }
    total = total + #d + #y + #k + #r
    if y ~= '' then fields[#fields + 1] = 'y'; fields[#fields + 1] = y end
    if r ~= '' then fields[#fields + 1] = 'r'; fields[#fields + 1] = r end
    if k ~= '' then
      fields[#fields + 1] = 'k'; fields[#fields + 1] = k
      local exp = time + window
      redis.call('HSET', KEYS[3], k, fmt(last) .. ':' .. fmt(time) .. ':' .. fmt(exp))
      redis.call('ZADD', KEYS[4], fmt(exp), k)
      keyed = true
    end
    redis.call('XADD', KEYS[2], fmt(last) .. '-0', unpack(fields))
    out[#out + 1] = { last, time, 0, false }
    if r ~= '' then
      fresh[#fresh + 1] = { y ~= '' and y or false, k ~= '' and k or false, d, r }
    else
      fresh[#fresh + 1] = { y ~= '' and y or false, k ~= '' and k or false, d }
    end
    bytes = bytes + #d + #y + #k + #r
  end
end
if keyed then
  -- Keys of a topic idle for a whole window all expired: let Redis drop them together.
  redis.call('PEXPIRE', KEYS[3], window + 1000)
  redis.call('PEXPIRE', KEYS[4], window + 1000)
end
-- After the adds, so that a write which frees memory never comes first (see above). Keys this
-- append stored again have a later expiry by now.
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', fmt(now), 'LIMIT', 0, 100 + 2 * n)
if #expired > 0 then
  redis.call('HDEL', KEYS[3], unpack(expired))
  redis.call('ZREM', KEYS[4], unpack(expired))
end
if #fresh > 0 then lastTime = time end
first = trim(KEYS[2], first, last, maxEvents, maxAge, maxBytes, total, now)
redis.call('HSET', KEYS[1], 'f', fmt(first), 'l', fmt(last), 't', fmt(lastTime), 'o', fmt(total))
if #fresh > 0 then
  -- Events ride along when small; a large batch only rings the bell and watchers read the stream,
  -- which keeps each message far below Redis' pub/sub output buffer limits.
  local body = ''
  if bytes <= tonumber(ARGV[9]) then body = cjson.encode(fresh) end
  redis.call('PUBLISH', ARGV[7], epoch .. '|' .. fmt(from) .. '|' .. fmt(last) .. '|' .. fmt(time) .. '|' .. body)
end
return out
`;

/**
 * KEYS: meta, stream. ARGV: now, maxEvents, maxAgeMs, maxBytes (the configured limits; the topic's
 * override wins), ageOnly ('1': nothing to do unless an age limit applies). Returns the new
 * firstSeq or false.
 */
export const TRIM = `${COMMON}
local meta = redis.call('HMGET', KEYS[1], 'e', 'f', 'l', 'o', 'rm', 'ra', 'rb')
if not meta[1] then return false end
local first, last = tonumber(meta[2]), tonumber(meta[3])
local maxEvents, maxAge, maxBytes = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if meta[5] then maxEvents = tonumber(meta[5]) end
if meta[6] then maxAge = tonumber(meta[6]) end
if meta[7] then maxBytes = tonumber(meta[7]) end
if ARGV[5] == '1' and maxAge <= 0 then return first end
local cut = trim(KEYS[2], first, last, maxEvents, maxAge, maxBytes, tonumber(meta[4]) or 0,
  tonumber(ARGV[1]))
if cut > first then redis.call('HSET', KEYS[1], 'f', fmt(cut)) end
return cut
`;

/**
 * KEYS: meta, stream. ARGV: from seq, count. Returns { the meta's e, c, f, l, t; up to count
 * entries from seq on }: one script, so both come from the same moment. Not MULTI: at maxmemory
 * Redis refuses every command queued in a transaction, reads too.
 */
export const READ = `
local m = redis.call('HMGET', KEYS[1], 'e', 'c', 'f', 'l', 't')
local entries = {}
if m[1] and tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
end
return { m, entries }
`;

/** KEYS: meta, stream. ARGV: ms. Returns the first seq with time >= ms, or false. */
export const SEQ_AT_TIME = `
local meta = redis.call('HMGET', KEYS[1], 'e', 'f', 'l')
if not meta[1] then return false end
local ms = tonumber(ARGV[1])
local lo, hi = tonumber(meta[2]), tonumber(meta[3]) + 1
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local m = redis.call('XRANGE', KEYS[2], string.format('%d', mid) .. '-0', '+', 'COUNT', 1)
  if m[1] and tonumber(m[1][2][2]) < ms then lo = mid + 1 else hi = mid end
end
return lo
`;

/**
 * KEYS: meta, stream, keys, expiry, topics. ARGV: topic, channel. Deletes the topic's log whole
 * and tells its watchers (`!<epoch>` on its channel). Returns the epoch deleted, or false.
 */
export const DELETE = `
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return false end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', ARGV[2], '!' .. epoch)
return epoch
`;

/**
 * KEYS: meta, stream. ARGV: beforeSeq. Drops the events before it (at most all of them). Returns
 * the new firstSeq, or false for an unknown topic.
 */
export const PURGE = `
local meta = redis.call('HMGET', KEYS[1], 'e', 'f', 'l')
if not meta[1] then return false end
local first, last = tonumber(meta[2]), tonumber(meta[3])
local cut = tonumber(ARGV[1])
if cut > last + 1 then cut = last + 1 end
if cut <= first then return first end
redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d', cut) .. '-0')
redis.call('HSET', KEYS[1], 'f', string.format('%d', cut))
return cut
`;

/**
 * KEYS: meta. ARGV: maxEvents, maxAgeMs, maxBytes of the override ('' = not set by it). Returns
 * the override as stored ({rm, ra, rb}, false when absent), or false for an unknown topic.
 */
export const SET_RETENTION = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local names = { 'rm', 'ra', 'rb' }
for i = 1, 3 do
  if ARGV[i] == '' then redis.call('HDEL', KEYS[1], names[i])
  else redis.call('HSET', KEYS[1], names[i], ARGV[i]) end
end
return 1
`;
