-- swap_batch.lua: one guest swap disk on shared storage, atomically.
--
-- KEYS[1] = {prefix}:swap:{disk}  the disk's index, hash: n -> pages on the disk, and
--           bucket -> "1" for every bucket in use (a bucket emptied since may stay listed; the
--           index goes with the disk's last page); bucket b = page >> 7 is hash
--           {KEYS[1]}:{b}: 4-byte big-endian page -> fixed-width record, 128 pages at most, so
--           Redis keeps it in its compact encoding
-- ARGV[1] = op: "batch" or "drop"
--
-- op "batch": ARGV[2] reads blob (4-byte pages), ARGV[3] frees blob, ARGV[4] writes blob
-- (concatenated records), ARGV[5] record length, ARGV[6] 0-based offset of the page bytes in
-- a record. In order: reads, frees (slot discards), writes (overwrite).
-- Returns {found flags "01..", found records, freed, pages after, pages new to the disk}.
--
-- op "drop": delete the disk, return the pages it held.
--

local index, op = KEYS[1], ARGV[1]

-- the bucket of a 4-byte big-endian page field (page >> 7), and its key (made once per batch)
local bucket_keys = {}
local function bucket(field)
  local b1, b2, b3, b4 = string.byte(field, 1, 4)
  local b = b1 * 131072 + b2 * 512 + b3 * 2 + math.floor(b4 / 128)
  local key = bucket_keys[b]
  if not key then
    key = index .. ':' .. b
    bucket_keys[b] = key
  end
  return key, b
end

if op == 'drop' then
  local n = 0
  for _, b in ipairs(redis.call('HKEYS', index)) do
    if b ~= 'n' then
      local key = index .. ':' .. b
      n = n + redis.call('HLEN', key)
      redis.call('DEL', key)
    end
  end
  redis.call('DEL', index)
  return n
end

if op ~= 'batch' then
  return redis.error_reply('swap_batch.lua: unknown op ' .. tostring(op))
end

local reads, frees, writes = ARGV[2], ARGV[3], ARGV[4]
local reclen, pageoff = tonumber(ARGV[5]), tonumber(ARGV[6])

local found, recs = {}, {}
for i = 1, #reads, 4 do
  local field = string.sub(reads, i, i + 3)
  local rec = redis.call('HGET', bucket(field), field)
  if rec then
    found[#found + 1] = '1'
    recs[#recs + 1] = rec
  else
    found[#found + 1] = '0'
  end
end

local freed = 0
for i = 1, #frees, 4 do
  local field = string.sub(frees, i, i + 3)
  freed = freed + redis.call('HDEL', bucket(field), field)
end

local added, used, listed = 0, {}, {}
for s = 1, #writes, reclen do
  local field = string.sub(writes, s + pageoff, s + pageoff + 3)
  local key, b = bucket(field)
  if redis.call('HSET', key, field, string.sub(writes, s, s + reclen - 1)) == 1 then
    added = added + 1
    if not listed[b] then
      listed[b] = true
      used[#used + 1] = b
      used[#used + 1] = 1
    end
  end
end
for c = 1, #used, 1000 do
  redis.call('HSET', index, unpack(used, c, math.min(c + 999, #used)))
end

local after
if added ~= freed then
  after = redis.call('HINCRBY', index, 'n', added - freed)
else
  after = tonumber(redis.call('HGET', index, 'n') or 0)
end
if after == 0 then -- the disk's last page went: so does its index
  redis.call('DEL', index)
end
return {table.concat(found), table.concat(recs), freed, after, added}
