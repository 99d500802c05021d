-- tmem_batch.lua: one guest's persistent tmem (frontswap) pool on a host, atomically.
--
-- KEYS[1] = {prefix}:tmem:{guest}  the pool's index, hash: bucket -> "1" for every bucket in use
--           (a bucket emptied since may stay listed; the index goes with the pool's last page);
--           bucket b = page >> 7 is hash {KEYS[1]}:{b}: 4-byte big-endian page -> fixed-width
--           record, 128 pages at most, so Redis keeps it in its compact encoding
-- KEYS[2] = {prefix}:tmem:meta     hash: used (host-wide pages), n:{guest}, frozen:{guest}
-- ARGV[1] = op: "batch" or "flush_area";  ARGV[2] = guest name
--
-- op "batch": ARGV[3] gets blob (4-byte pages), ARGV[4] flushes blob, ARGV[5] puts blob
-- (concatenated records), ARGV[6] record length, ARGV[7] 0-based offset of the page bytes in
-- a record, ARGV[8] quota (guest pages), ARGV[9] capacity (host pages), ARGV[10] exclusive
-- gets "1"/"0". In order: gets, flushes (invalidate_page), puts. A put succeeds when the guest
-- is not frozen and, after it, the guest's count <= quota and host used <= capacity (so a
-- duplicate put needs no room, a new page needs one). A failing put of an existing page
-- removes the old copy (it is "invalidated"): stale data is never left readable.
-- Optional ARGV[11] costs blob (one 4-byte big-endian number per put) and ARGV[12] room: a pool
-- that bills by compressed size and deduplicates (hosts.tmem.compress/dedup) passes each put's
-- cost to the guest in bytes and the bytes the guest may still add; a put then succeeds when
-- the guest is not frozen and its cost fits in what is left of the room (the quota and
-- capacity counts do not apply: the caller bills in bytes).
-- Returns {found flags "01..", found records, put flags "01..", flushed, invalidated,
--          guest count after, host used after}.
--
-- op "flush_area" (invalidate_area): delete the pool, fix the counts, return pages removed.

local pool, meta = KEYS[1], KEYS[2]
local op, guest = ARGV[1], ARGV[2]
local nfield = 'n:' .. guest

-- the bucket of a 4-byte big-endian page field (page >> 7), and its key (made once per batch)
local bucket_keys = {}
local function bucket(field)
  local b1, b2, b3, b4 = string.byte(field, 1, 4)
  local b = b1 * 131072 + b2 * 512 + b3 * 2 + math.floor(b4 / 128)
  local key = bucket_keys[b]
  if not key then
    key = pool .. ':' .. b
    bucket_keys[b] = key
  end
  return key, b
end

if op == 'flush_area' then
  local removed = 0
  for _, b in ipairs(redis.call('HKEYS', pool)) do
    local key = pool .. ':' .. b
    removed = removed + redis.call('HLEN', key)
    redis.call('DEL', key)
  end
  local billed = tonumber(redis.call('HGET', meta, nfield) or 0)
  redis.call('DEL', pool)
  redis.call('HDEL', meta, nfield)
  if billed ~= 0 then
    redis.call('HINCRBY', meta, 'used', -billed)
  end
  return removed
end

if op ~= 'batch' then
  return redis.error_reply('tmem_batch.lua: unknown op ' .. tostring(op))
end

local gets, flushes, puts = ARGV[3], ARGV[4], ARGV[5]
local reclen, pageoff = tonumber(ARGV[6]), tonumber(ARGV[7])
local quota, capacity = tonumber(ARGV[8]), tonumber(ARGV[9])
local exclusive = ARGV[10] == '1'
local costs = ARGV[11] or ''
local bybytes = #costs > 0
local room = tonumber(ARGV[12] or 0)

local count0 = tonumber(redis.call('HGET', meta, nfield) or 0)
local used0 = tonumber(redis.call('HGET', meta, 'used') or 0)
local frozen = redis.call('HGET', meta, 'frozen:' .. guest) == '1'
local delta = 0 -- change of this guest's count (and so of host used) during the script

-- 1. gets
local found, recs = {}, {}
for i = 1, #gets, 4 do
  local field = string.sub(gets, i, i + 3)
  local key = bucket(field)
  local rec = redis.call('HGET', key, field)
  if rec then
    found[#found + 1] = '1'
    recs[#recs + 1] = rec
    if exclusive then
      redis.call('HDEL', key, field)
      delta = delta - 1
    end
  else
    found[#found + 1] = '0'
  end
end

-- 2. flushes
local flushed = 0
for i = 1, #flushes, 4 do
  local field = string.sub(flushes, i, i + 3)
  flushed = flushed + redis.call('HDEL', bucket(field), field)
end
delta = delta - flushed

-- 3. puts. Whether a put's page already has a copy decides whether it needs room and what a
-- refused put removes: read for every put at once (HMGET in chunks) and kept up to date, so a
-- refused put of a page without a copy costs no command at all. (HMGET a bucket, in chunks.)
local putok, invalidated = {}, 0
local fields, keys, has = {}, {}, {}
local grouped, used_buckets = {}, {}
local n = 0
for s = 1, #puts, reclen do
  n = n + 1
  local field = string.sub(puts, s + pageoff, s + pageoff + 3)
  local key, b = bucket(field)
  fields[n], keys[n] = field, key
  local group = grouped[key]
  if not group then
    group = {}
    grouped[key] = group
  end
  group[#group + 1] = field
end
for key, group in pairs(grouped) do
  for c = 1, #group, 1000 do
    local last = math.min(c + 999, #group)
    local got = redis.call('HMGET', key, unpack(group, c, last))
    for j = c, last do
      has[group[j]] = got[j - c + 1] ~= false
    end
  end
end
local added = {} -- buckets a put stored a page in, for the index
for k = 1, n do
  local field, key = fields[k], keys[k]
  local existed = has[field]
  local count, used = count0 + delta, used0 + delta
  local ok
  if frozen then
    ok = false
  elseif bybytes then
    local b1, b2, b3, b4 = string.byte(costs, 4 * k - 3, 4 * k)
    local cost = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    ok = cost <= room
    if ok then
      room = room - cost
    end
  else
    ok = (count < quota and used < capacity)
      or (existed and count <= quota and used <= capacity)
  end
  if ok then
    local s = (k - 1) * reclen + 1
    redis.call('HSET', key, field, string.sub(puts, s, s + reclen - 1))
    if not added[key] then
      added[key] = true
      local _, b = bucket(field)
      used_buckets[#used_buckets + 1] = b
      used_buckets[#used_buckets + 1] = 1
    end
    if not existed then
      delta = delta + 1
      has[field] = true
    end
    putok[k] = '1'
  else
    if existed then
      redis.call('HDEL', key, field)
      delta = delta - 1
      invalidated = invalidated + 1
      has[field] = false
    end
    putok[k] = '0'
  end
end

for c = 1, #used_buckets, 1000 do
  redis.call('HSET', pool, unpack(used_buckets, c, math.min(c + 999, #used_buckets)))
end
if delta ~= 0 then
  redis.call('HINCRBY', meta, nfield, delta)
  redis.call('HINCRBY', meta, 'used', delta)
end
if count0 + delta == 0 then -- the pool's last page went: so does its index
  redis.call('DEL', pool)
end
return {table.concat(found), table.concat(recs), table.concat(putok), flushed, invalidated,
        count0 + delta, used0 + delta}
