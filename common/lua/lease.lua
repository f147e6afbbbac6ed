-- A member's lease in a group (storecodec_lease_script, see storecodec.h): join, renew,
-- leave, the pruning of members whose lease ran out, and the group's one holder.
--
-- KEYS[1] the group's members hash, KEYS[2] the epoch counter, KEYS[3] the group's wake
-- list. ARGV[1] the member's name; ARGV[2] the epoch it holds ("0": none yet); ARGV[3] the
-- lease's length, ms; ARGV[4] its phase: "active", "leaving" (still a member, handing its
-- work over) or "gone" (leaves now); ARGV[5] "1" when it is ready to be the holder;
-- ARGV[6] a count it reports (users owned); ARGV[7] "1" to prune the members whose lease
-- ran out (the caller has been connected long enough to know they did not renew);
-- ARGV[8] what it wants of the holder: "want" (take it if nobody valid holds it),
-- "release" (give it up and wake a waiting member) or "none"; ARGV[9..] names of members
-- known dead (a process of this host that no longer exists), pruned at once.
--
-- A member's value: "<epoch> <expires ms> <phase> <ready> <count> <since ms>", times on
-- this server's clock. The holder: "@holder" -> "<epoch> <name>"; it is valid while that
-- member is present with that epoch and not leaving.
--
-- Returns {status, epoch, now ms, the whole hash (flat)}; status: "renewed", "joined" (a
-- new epoch: the first, or the one before was lost), "left", or "conflict" (another live
-- process holds the name; nothing written).
-- At maxmemory (noeviction) Redis refuses a script's first write that may need memory, and
-- lets a script that has written go on (storecodec.h): this HDEL of a field no member can
-- have needs none, so a lease is still joined, renewed and left when Redis is full (a
-- member's value is a few dozen bytes).
redis.call('HDEL', KEYS[1], '@oom')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local name, epoch, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local phase, ready, count = ARGV[4], ARGV[5], ARGV[6]

local function fields(v)
  if not v then return nil end
  local e, x, p, r, c, s = string.match(v, '^(%d+) (%d+) (%S+) (%d) (%d+) (%d+)$')
  if not e then return nil end
  return {epoch = e, expires = tonumber(x), phase = p, since = s}
end

for i = 9, #ARGV do
  if ARGV[i] ~= name then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
if ARGV[7] == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if all[i] ~= name and string.sub(all[i], 1, 1) ~= '@' then
      local m = fields(all[i + 1])
      if not m or m.expires < now then
        redis.call('HDEL', KEYS[1], all[i])
      end
    end
  end
end

local status
local cur = fields(redis.call('HGET', KEYS[1], name))
local since = tostring(now)
if phase == 'gone' then
  if cur and cur.epoch == epoch then
    redis.call('HDEL', KEYS[1], name)
  end
  status = 'left'
elseif cur and cur.epoch == epoch then
  since = cur.since
  status = 'renewed'
elseif cur and cur.expires >= now then
  return {'conflict', cur.epoch, tostring(now), redis.call('HGETALL', KEYS[1])}
else
  -- Never an epoch this member has held before: a Redis that restarted empty, or a new
  -- master that lacked the last INCR, would hand out the same numbers again.
  local e = redis.call('INCR', KEYS[2])
  if e <= tonumber(epoch) then
    e = tonumber(epoch) + 1
    redis.call('SET', KEYS[2], e)
  end
  epoch = tostring(e)
  status = 'joined'
end
if status ~= 'left' then
  redis.call('HSET', KEYS[1], name, table.concat(
    {epoch, tostring(now + ttl), phase, ready, count, since}, ' '))
end

local h = redis.call('HGET', KEYS[1], '@holder')
local he, hn
if h then he, hn = string.match(h, '^(%d+) (.+)$') end
local mine = hn == name and he == epoch
if mine and (ARGV[8] == 'release' or status == 'left') then
  redis.call('HDEL', KEYS[1], '@holder')
  redis.call('RPUSH', KEYS[3], name)
  redis.call('PEXPIRE', KEYS[3], ttl * 2)
elseif ARGV[8] == 'want' and status ~= 'left' and phase == 'active' and ready == '1' and
    not mine then
  local hm = hn and fields(redis.call('HGET', KEYS[1], hn))
  if not (hm and hm.epoch == he and hm.phase ~= 'leaving') then
    redis.call('HSET', KEYS[1], '@holder', epoch .. ' ' .. name)
  end
end
return {status, epoch, tostring(now), redis.call('HGETALL', KEYS[1])}
