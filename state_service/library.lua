#!lua name=hiddenstate
-- hiddenstate's state protocol, run atomically inside Valkey. The Python client (state_service/store.py) is the
-- only caller; codec.py documents the value layout (this file reads only the layout byte and the version).
-- Every key an update touches is passed in KEYS, so the functions stay valid on Valkey Cluster.

-- The version names the newest protocol (KEYS, ARGV, replies) this body speaks, not the code: a body that speaks
-- the same protocols keeps it. Protocol 3 adds expectations on the stored bytes (hs_cas_many below) and is a
-- superset of protocol 2, so this body serves clients of both: scorers of an older revision stay ready while a
-- newer one rolls out.
local LIBRARY_VERSION = '3'
local SPOKEN = {['2'] = true, ['3'] = true}
local LAYOUT = 1
local HEADER = 12

-- The stored version, 0 for an absent key, or nil when the bytes are not a state value of this layout.
local function stored_version(raw)
  if not raw then return 0 end
  if #raw < HEADER or string.byte(raw, 1) ~= LAYOUT then return nil end
  local _, version = struct.unpack('<BI5', raw)
  return version
end

-- hs_cas_many: KEYS per update = state, dedupe bucket now, dedupe bucket before.
-- ARGV = dedupe_expire_at, idle_ttl_ms, then per update: expected, n_events, new_value,
--        then n_events pairs (event digest, applied record).
-- expected is a version number (protocol 2; 0 = the entity must be unseen) or, from protocol 3, the exact stored
-- value the update was computed from. Bytes catch what a version cannot: a state erased (or expired) and rebuilt to
-- the same version by another writer. Two interned Lua strings compare in constant time.
-- Reply per update: {0, new_version} applied | {1, version, value} conflict
--                   | {2, version, value, {event_index, applied record, ...}} duplicate.
-- A redis.call from Lua costs about as much as the command itself, so the common case (one event per entity)
-- passes its one digest directly rather than through a table and unpack.
local function cas_many(keys, args)
  local n = #keys / 3
  -- A corrupt entity refuses the whole batch before anything is written, so a batch stays all-or-nothing
  -- with respect to this error. The values read here are used below: one GET per entity, not two.
  local raws, versions = {}, {}
  for i = 1, n do
    local raw = redis.call('GET', keys[3 * i - 2])
    local version = stored_version(raw)
    if not version then
      return redis.error_reply('CORRUPT ' .. i .. ' stored value at ' .. keys[3 * i - 2] .. ' is not layout 1')
    end
    raws[i], versions[i] = raw, version
  end
  local expire_at = args[1]
  local idle_ttl_ms = tonumber(args[2])
  local out = {}
  local written = {}
  local a = 3
  for i = 1, n do
    local state_key, bucket_now, bucket_before = keys[3 * i - 2], keys[3 * i - 1], keys[3 * i]
    local expect, count, value = args[a], tonumber(args[a + 1]), args[a + 2]
    local first = a + 3
    a = first + 2 * count
    local now_hits, before_hits
    if count == 1 then
      now_hits = redis.call('HMGET', bucket_now, args[first])
      before_hits = redis.call('HMGET', bucket_before, args[first])
    else
      local digests = {}
      for j = 0, count - 1 do digests[j + 1] = args[first + 2 * j] end
      now_hits = redis.call('HMGET', bucket_now, unpack(digests))
      before_hits = redis.call('HMGET', bucket_before, unpack(digests))
    end
    local dups = {}
    for j = 1, count do
      local hit = now_hits[j] or before_hits[j]
      if hit then
        dups[#dups + 1] = j - 1
        dups[#dups + 1] = hit
      end
    end
    -- A key listed twice reads what this call wrote for it first (written[...]), as a second GET would.
    local raw, version = raws[i], versions[i]
    if written[state_key] then
      raw = written[state_key]
      version = stored_version(raw)
    end
    local expected = tonumber(expect)
    local matches = version == expected
    if not expected then
      expected = stored_version(expect)
      if not expected then
        return redis.error_reply('BADEXPECT ' .. i .. ' expected is neither a version nor a layout-1 value')
      end
      matches = raw == expect
    end
    if #dups > 0 then
      out[i] = {2, version, raw or false, dups}
    elseif not matches then
      out[i] = {1, version, raw or false}
    else
      local _, new_version = struct.unpack('<BI5', value)
      if new_version ~= expected + count then
        return redis.error_reply('BADVALUE ' .. i .. ' value carries version ' .. new_version ..
          ', expected ' .. (expected + count))
      end
      if idle_ttl_ms > 0 then
        redis.call('SET', state_key, value, 'PX', idle_ttl_ms)
      else
        redis.call('SET', state_key, value)
      end
      written[state_key] = value
      if count == 1 then
        redis.call('HSET', bucket_now, args[first], args[first + 1])
      else
        redis.call('HSET', bucket_now, unpack(args, first, first + 2 * count - 1))
      end
      -- NX: only the write that created the bucket sets its expiry. A bucket that has one is left alone, which
      -- costs about half as much as setting it again on every write.
      redis.call('EXPIREAT', bucket_now, expire_at, 'NX')
      out[i] = {0, new_version}
    end
  end
  return out
end

-- hs_restore_many: KEYS = state keys, ARGV = idle_ttl_ms, then one value per key.
-- Writes a value only if it is newer than what is stored (or the stored bytes are corrupt), so a restore never
-- rolls an entity back. Reply: number of values written.
local function restore_many(keys, args)
  local idle_ttl_ms = tonumber(args[1])
  local written = 0
  for i = 1, #keys do
    local value = args[i + 1]
    local _, incoming = struct.unpack('<BI5', value)
    local current = stored_version(redis.call('GET', keys[i]))
    if current == nil or incoming > current then
      if idle_ttl_ms > 0 then
        redis.call('SET', keys[i], value, 'PX', idle_ttl_ms)
      else
        redis.call('SET', keys[i], value)
      end
      written = written + 1
    end
  end
  return written
end

-- hs_library_version [protocol]: a client asks for the protocol it speaks and gets it back if this body speaks it,
-- else the newest one it does. Clients of protocol 2 ask without an argument and expect '2'.
local function library_version(keys, args)
  local asked = args[1]
  if asked == nil then return '2' end
  if SPOKEN[asked] then return asked end
  return LIBRARY_VERSION
end

redis.register_function('hs_cas_many', cas_many)
redis.register_function('hs_restore_many', restore_many)
redis.register_function{function_name = 'hs_library_version', callback = library_version, flags = {'no-writes'}}
