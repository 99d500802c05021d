-- postcopy_batch.lua: the pages a post-copy migration left at its source, atomically.
--
-- KEYS[1] = {prefix}:postcopy:{guest}:{migration}  hash: 4-byte big-endian page -> fixed-width
--           record (one hash: it only empties after switch-over; the swap disks' buckets are
--           in swap_batch.lua)
-- ARGV[1] = op: "batch" or "drop"
--
-- op "batch": ARGV[2] reads blob (4-byte pages), ARGV[3] frees blob, ARGV[4] writes blob
-- (concatenated records), ARGV[5] record length, ARGV[6] 0-based offset of the page bytes in
-- a record. In order: reads, frees (slot discards), writes (overwrite).
-- Returns {found flags "01..", found records, freed, pages after}.
--
-- op "drop": delete the hash, return the pages it held.

local disk, op = KEYS[1], ARGV[1] -- the hash

if op == 'drop' then
  local n = redis.call('HLEN', disk)
  redis.call('DEL', disk)
  return n
end

if op ~= 'batch' then
  return redis.error_reply('postcopy_batch.lua: unknown op ' .. tostring(op))
end

local reads, frees, writes = ARGV[2], ARGV[3], ARGV[4]
local reclen, pageoff = tonumber(ARGV[5]), tonumber(ARGV[6])

local found, recs = {}, {}
for i = 1, #reads, 4 do
  local rec = redis.call('HGET', disk, string.sub(reads, i, i + 3))
  if rec then
    found[#found + 1] = '1'
    recs[#recs + 1] = rec
  else
    found[#found + 1] = '0'
  end
end

local freed = 0
for i = 1, #frees, 4 do
  freed = freed + redis.call('HDEL', disk, string.sub(frees, i, i + 3))
end

for s = 1, #writes, reclen do
  redis.call('HSET', disk, string.sub(writes, s + pageoff, s + pageoff + 3),
             string.sub(writes, s, s + reclen - 1))
end

return {table.concat(found), table.concat(recs), freed, redis.call('HLEN', disk)}
