-- dcache_batch.lua: the host's write-back cache of one guest's virtual swap disk, atomically.
--
-- KEYS[1] = {prefix}:dcache:{disk}        hash: 4-byte big-endian page -> fixed-width record
-- KEYS[2] = {prefix}:dcache:{disk}:dirty  hash: page -> "1" for pages not yet on the disk
-- KEYS[3] = {prefix}:dcache:meta          hash: pages, dirty (host-wide), n:{disk}, d:{disk}
-- ARGV[1] = op: "batch" or "drop";  ARGV[2] = disk name
--
-- op "batch": ARGV[3] reads blob (4-byte pages), ARGV[4] frees blob (discards), ARGV[5]
-- write-back blob (pages), ARGV[6] drops blob, ARGV[7] inserts blob (records, dirty), ARGV[8]
-- record length, ARGV[9] 0-based offset of the page bytes in a record. In order: reads
-- (hits return records), frees (drop the copy, dirty or not: the slot is free), write-back
-- (return the records and mark them clean; the caller writes them to the disk), drops (only
-- clean pages: a dirty page is never dropped unwritten; one asked for is refused and
-- counted), inserts (dirty). Returns {found flags "01..", found records, write-back
-- records, freed, dropped, refused, disk pages after, disk dirty after}.
--
-- op "drop": the disk is gone (its guest died): delete its cache, fix the counts.

local cache, dirty, meta = KEYS[1], KEYS[2], KEYS[3]
local op, disk = ARGV[1], ARGV[2]
local nfield, dfield = 'n:' .. disk, 'd:' .. disk

if op == 'drop' then
  local n = redis.call('HLEN', cache)
  local d = redis.call('HLEN', dirty)
  redis.call('DEL', cache, dirty)
  redis.call('HDEL', meta, nfield, dfield)
  -- (a Lua -0 reaches Redis as "-0", which HINCRBY refuses: skip zero changes)
  if n ~= 0 then
    redis.call('HINCRBY', meta, 'pages', -n)
  end
  if d ~= 0 then
    redis.call('HINCRBY', meta, 'dirty', -d)
  end
  return n
end

if op ~= 'batch' then
  return redis.error_reply('dcache_batch.lua: unknown op ' .. tostring(op))
end

local reads, frees, wback, drops, inserts = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local reclen, pageoff = tonumber(ARGV[8]), tonumber(ARGV[9])
local dn, dd = 0, 0 -- changes of this disk's pages and dirty pages

local found, recs = {}, {}
for i = 1, #reads, 4 do
  local rec = redis.call('HGET', cache, string.sub(reads, i, i + 3))
  if rec then
    found[#found + 1] = '1'
    recs[#recs + 1] = rec
  else
    found[#found + 1] = '0'
  end
end

local freed = 0
for i = 1, #frees, 4 do
  local f = string.sub(frees, i, i + 3)
  if redis.call('HDEL', cache, f) == 1 then
    freed = freed + 1
    dn = dn - 1
    dd = dd - redis.call('HDEL', dirty, f)
  end
end

local wrecs = {}
for i = 1, #wback, 4 do
  local f = string.sub(wback, i, i + 3)
  local rec = redis.call('HGET', cache, f)
  if rec and redis.call('HDEL', dirty, f) == 1 then
    wrecs[#wrecs + 1] = rec
    dd = dd - 1
  end
end

local dropped, refused = 0, 0
for i = 1, #drops, 4 do
  local f = string.sub(drops, i, i + 3)
  if redis.call('HEXISTS', dirty, f) == 1 then
    refused = refused + 1
  elseif redis.call('HDEL', cache, f) == 1 then
    dropped = dropped + 1
    dn = dn - 1
  end
end

for s = 1, #inserts, reclen do
  local f = string.sub(inserts, s + pageoff, s + pageoff + 3)
  dn = dn + redis.call('HSET', cache, f, string.sub(inserts, s, s + reclen - 1))
  dd = dd + redis.call('HSET', dirty, f, '1')
end

if dn ~= 0 then
  redis.call('HINCRBY', meta, nfield, dn)
  redis.call('HINCRBY', meta, 'pages', dn)
end
if dd ~= 0 then
  redis.call('HINCRBY', meta, dfield, dd)
  redis.call('HINCRBY', meta, 'dirty', dd)
end
return {table.concat(found), table.concat(recs), table.concat(wrecs), freed, dropped, refused,
        redis.call('HLEN', cache), redis.call('HLEN', dirty)}
