-- hswap_batch.lua: the host swap area holding one guest's paged-out frames, atomically.
--
-- KEYS[1] = {prefix}:hswap:{guest}  hash: 4-byte big-endian frame -> fixed-width record
-- KEYS[2] = {prefix}:hswap:meta     hash: used (host-wide frames), n:{guest}
-- ARGV[1] = op: "batch" or "drop";  ARGV[2] = guest name
--
-- op "batch": ARGV[3] reads blob (4-byte frames), ARGV[4] frees blob, ARGV[5] write frames
-- blob, ARGV[6] write records blob (aligned with the write frames), ARGV[7] record length,
-- ARGV[8] quota (guest frames), ARGV[9] capacity (host frames). In order: reads (a swap-in
-- returns the record and frees the slot), frees (discard unread), writes (a swap-out is
-- refused when, after it, the guest would hold more than its quota or the host more than its
-- capacity). Returns {found flags "01..", found records, write flags "01..", freed,
-- guest count after, host used after}.
--
-- op "drop": delete the guest's host swap (its process died), fix the counts, return frames.

local area, meta = KEYS[1], KEYS[2]
local op, guest = ARGV[1], ARGV[2]
local nfield = 'n:' .. guest

if op == 'drop' then
  local removed = redis.call('HLEN', area)
  local billed = tonumber(redis.call('HGET', meta, nfield) or 0)
  redis.call('DEL', area)
  redis.call('HDEL', meta, nfield)
  if billed ~= 0 then
    redis.call('HINCRBY', meta, 'used', -billed)
  end
  return removed
end

if op ~= 'batch' then
  return redis.error_reply('hswap_batch.lua: unknown op ' .. tostring(op))
end

local reads, frees, wframes, wrecs = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local reclen = tonumber(ARGV[7])
local quota, capacity = tonumber(ARGV[8]), tonumber(ARGV[9])
local count = tonumber(redis.call('HGET', meta, nfield) or 0)
local used = tonumber(redis.call('HGET', meta, 'used') or 0)
local delta = 0

local found, recs = {}, {}
for i = 1, #reads, 4 do
  local field = string.sub(reads, i, i + 3)
  local rec = redis.call('HGET', area, field)
  if rec then
    found[#found + 1] = '1'
    recs[#recs + 1] = rec
    redis.call('HDEL', area, field)
    delta = delta - 1
  else
    found[#found + 1] = '0'
  end
end

local freed = 0
for i = 1, #frees, 4 do
  freed = freed + redis.call('HDEL', area, string.sub(frees, i, i + 3))
end
delta = delta - freed

local ok = {}
local j = 1
for i = 1, #wframes, 4 do
  local field = string.sub(wframes, i, i + 3)
  local rec = string.sub(wrecs, j, j + reclen - 1)
  j = j + reclen
  if redis.call('HEXISTS', area, field) == 1 then
    redis.call('HSET', area, field, rec)
    ok[#ok + 1] = '1'
  elseif count + delta < quota and used + delta < capacity then
    redis.call('HSET', area, field, rec)
    delta = delta + 1
    ok[#ok + 1] = '1'
  else
    ok[#ok + 1] = '0'
  end
end

if delta ~= 0 then
  redis.call('HINCRBY', meta, nfield, delta)
  redis.call('HINCRBY', meta, 'used', delta)
end
return {table.concat(found), table.concat(recs), table.concat(ok), freed, count + delta,
        used + delta}
