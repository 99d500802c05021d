-- swap_plain.lua: the counted commands of a swap disk's plain batch (layout: swap_batch.lua).
-- KEYS[1] = the disk's index. ARGV[1] = "free" or "write", then for each bucket: its number,
-- k, and k fields (free: HDEL) or k field-record pairs (write: HSET).
-- Keeps the index (n, buckets in use); returns {pages freed / new to the disk, pages after}.
local index, op = KEYS[1], ARGV[1]
local write = op == 'write'
local per = write and 2 or 1
local changed, used, i = 0, {}, 2
while i <= #ARGV do
  local b, k = ARGV[i], tonumber(ARGV[i + 1])
  local key, last, got = index .. ':' .. b, i + 1 + per * k, 0
  for c = i + 2, last, 1000 do
    local stop = math.min(c + 999, last)
    if write then
      got = got + redis.call('HSET', key, unpack(ARGV, c, stop))
    else
      got = got + redis.call('HDEL', key, unpack(ARGV, c, stop))
    end
  end
  if write and got > 0 then
    used[#used + 1] = b
    used[#used + 1] = 1
  end
  changed, i = changed + got, last + 1
end
for c = 1, #used, 1000 do
  redis.call('HSET', index, unpack(used, c, math.min(c + 999, #used)))
end
local after
if changed ~= 0 then
  after = redis.call('HINCRBY', index, 'n', write and changed or -changed)
else
  after = tonumber(redis.call('HGET', index, 'n') or 0)
end
if after == 0 then
  redis.call('DEL', index)
end
return {changed, after}
