-- eph_batch.lua: one guest's ephemeral tmem pool (cleancache) on a host, atomically.
--
-- KEYS[1] = {prefix}:eph:{guest}      hash: 4-byte big-endian page -> fixed-width record
-- KEYS[2] = {prefix}:eph:{guest}:lru  sorted set: page field -> put sequence number
-- KEYS[3] = {prefix}:eph:meta         hash: used (host-wide pages), n:{guest}, seq:{guest}
-- KEYS[4] = {prefix}:tmem:meta        the host's tmem bookkeeping (frozen:{guest})
-- ARGV[1] = op: "batch" or "flush_area";  ARGV[2] = guest name
--
-- op "batch": ARGV[3] gets blob (4-byte pages), ARGV[4] puts blob (concatenated records),
-- ARGV[5] record length, ARGV[6] 0-based offset of the page bytes in a record, ARGV[7] quota
-- (the pages the host lets the guest hold this window). In order:
--   1. the host drops the least recently put pages beyond the quota (the budget may have
--      shrunk since the last batch: ephemeral pages go without asking the guest);
--   2. gets are exclusive, as in Xen's private ephemeral pools: a page found is returned and
--      removed (it is back in the guest's page cache);
--   3. puts: refused while the client is frozen or the quota is 0 (an old copy of the page is
--      then removed: stale data is never left readable); otherwise stored, or overwritten,
--      as the most recent page; a pool above its quota drops its least recent page.
-- Returns {found flags "01..", found records, put flags "01..", pages dropped by the host
--          (steps 1 and 3), guest count after, host used after}.
--
-- op "flush_area": delete the guest's pool, fix the counts, return the pages removed.

local pool, lru, meta, tmeta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, guest = ARGV[1], ARGV[2]
local nfield, sfield = 'n:' .. guest, 'seq:' .. guest

if op == 'flush_area' then
  local removed = redis.call('HLEN', pool)
  redis.call('DEL', pool, lru)
  redis.call('HDEL', meta, nfield)
  if removed ~= 0 then
    redis.call('HINCRBY', meta, 'used', -removed)
  end
  return removed
end

if op ~= 'batch' then
  return redis.error_reply('eph_batch.lua: unknown op ' .. tostring(op))
end

local gets, puts = ARGV[3], ARGV[4]
local reclen, pageoff = tonumber(ARGV[5]), tonumber(ARGV[6])
local quota = tonumber(ARGV[7])
local frozen = redis.call('HGET', tmeta, 'frozen:' .. guest) == '1'
local count0 = redis.call('HLEN', pool)
local count = count0
local seq = tonumber(redis.call('HGET', meta, sfield) or 0)

local function drop_oldest(n)
  if n <= 0 then
    return 0
  end
  local old = redis.call('ZPOPMIN', lru, n)
  for i = 1, #old, 2 do
    redis.call('HDEL', pool, old[i])
  end
  count = count - #old / 2
  return #old / 2
end

-- 1. the host's budget
local dropped = drop_oldest(count - quota)

-- 2. gets (exclusive)
local found, recs = {}, {}
for i = 1, #gets, 4 do
  local field = string.sub(gets, i, i + 3)
  local rec = redis.call('HGET', pool, field)
  if rec then
    found[#found + 1] = '1'
    recs[#recs + 1] = rec
    redis.call('HDEL', pool, field)
    redis.call('ZREM', lru, field)
    count = count - 1
  else
    found[#found + 1] = '0'
  end
end

-- 3. puts
local putok = {}
for s = 1, #puts, reclen do
  local rec = string.sub(puts, s, s + reclen - 1)
  local field = string.sub(puts, s + pageoff, s + pageoff + 3)
  if frozen or quota <= 0 then
    if redis.call('HDEL', pool, field) == 1 then
      redis.call('ZREM', lru, field)
      count = count - 1
    end
    putok[#putok + 1] = '0'
  else
    seq = seq + 1
    count = count + redis.call('HSET', pool, field, rec)
    redis.call('ZADD', lru, seq, field)
    dropped = dropped + drop_oldest(count - quota)
    putok[#putok + 1] = '1'
  end
end

redis.call('HSET', meta, sfield, seq)
if count ~= count0 then
  redis.call('HSET', meta, nfield, count)
  redis.call('HINCRBY', meta, 'used', count - count0)
end
return {table.concat(found), table.concat(recs), table.concat(putok), dropped, count,
        tonumber(redis.call('HGET', meta, 'used') or 0)}
