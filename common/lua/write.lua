-- The one write of a user's state (storecodec_write_script, see storecodec.h), fenced.
--
-- KEYS[1] the user's hash, KEYS[2] the event stream, KEYS[3] sipbridge's members hash.
-- ARGV[1] the JID; ARGV[2], ARGV[3] the writer's member name and lease epoch;
-- ARGV[4] "write" (a change: always written, with a stream entry) or "check" (written,
-- with an entry, only if Redis holds something else: the repair after a reconnect, and a
-- claim); ARGV[5] "1" when the writer claims the user (it is the user's owner by the
-- membership it sees), "0" when it writes a user it is handing over; ARGV[6..] the
-- record's name/value pairs (none: the user was removed).
--
-- Fencing: a writer whose lease is gone (its epoch no longer in the members hash: another
-- member found it dead and took its users) is refused, and so is a writer that does not
-- claim while another live member owns the user. A claim always wins the ownership: the
-- owner field then names the writer, and the owner is the member that keeps the user's
-- subscription and writes its latest state, so the last word in Redis is always a live
-- subscriber's.
--
-- Handover order: each member has its own subscription and nothing orders their
-- NOTIFYs, so a new owner's first write (its claim) may carry an older state than the
-- one its live old owner, still subscribed, has just written; overwriting it would show
-- the user ringing -> idle -> ringing. The records' ts (each writer's wall clock when it
-- derived the state) cannot tell which came first when they are close: two hosts
-- receive one PBX's NOTIFYs on two subscriptions, each with its own delay (a burst of a
-- handover's first NOTIFYs, milliseconds to seconds), on two clocks. So a claim over
-- another live owner whose ts is within CLAIM_ORDER_US of the held one, older or newer,
-- takes the ownership only: the state is kept, no entry is written, and it returns 2;
-- the claimer then writes its latest state again a second later as the owner (store.c),
-- by when its own subscription has caught up, so the final state is still the live
-- subscriber's. Further apart, the order is plain (or a clock is off, or the data is
-- stale): the claim overwrites, as a claim over no owner or a dead one always does. A
-- removal is never compared.
-- Returns 1 when written with an entry, 0 when nothing needed writing, 2 (a claim only)
-- when the ownership moved and the newer state held was kept.
local MAXLEN = '100000' -- STORECODEC_STREAM_MAXLEN
local CLAIM_ORDER_US = 2000000 -- STORECODEC_CLAIM_ORDER_US

local function epoch_of(v)
  return v and string.match(v, '^(%d+) ')
end

-- Whether the owner field o names a member whose lease (that epoch) is still held.
local function live(o)
  local oe, on = string.match(o, '^(%d+) (.+)$')
  return oe and epoch_of(redis.call('HGET', KEYS[3], on)) == oe
end

local me = ARGV[3] .. ' ' .. ARGV[2]
if epoch_of(redis.call('HGET', KEYS[3], ARGV[2])) ~= ARGV[3] then
  return redis.error_reply('FENCED lease ' .. me .. ' is no longer a member')
end
local owner = redis.call('HGET', KEYS[1], 'owner')
local other_live = owner and owner ~= me and live(owner)
if other_live and ARGV[5] ~= '1' then
  return redis.error_reply('FENCED owner ' .. owner)
end

if #ARGV < 7 then
  if ARGV[4] == 'check' and redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
  end
  redis.call('DEL', KEYS[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', MAXLEN, '*', 'user', ARGV[1], 'state', 'removed')
  return 1
end

local f = {}
for i = 6, #ARGV - 1, 2 do
  f[#f + 1] = ARGV[i]
  f[#f + 1] = ARGV[i + 1]
end
local cur = redis.call('HGETALL', KEYS[1])
local have, nhave = {}, 0
for i = 1, #cur, 2 do
  if cur[i] ~= 'owner' then
    have[cur[i]] = cur[i + 1]
    nhave = nhave + 2
  end
end
if other_live then
  local ts
  for i = 1, #f, 2 do
    if f[i] == 'ts' then ts = tonumber(f[i + 1]) end
  end
  local held = tonumber(have.ts)
  if ts and held and math.abs(held - ts) <= CLAIM_ORDER_US then
    -- HDEL first: it needs no memory, so the HSET goes through at maxmemory too.
    redis.call('HDEL', KEYS[1], 'owner')
    redis.call('HSET', KEYS[1], 'owner', me)
    return 2
  end
end
-- 'since' is when the state began: while the state stays what Redis holds, its since is
-- kept, whichever member wrote it (a user handed over keeps "on the phone since 10:02").
local state
for i = 1, #f, 2 do
  if f[i] == 'state' then state = f[i + 1] end
end
if state and have.state == state and have.since then
  for i = 1, #f, 2 do
    if f[i] == 'since' then f[i + 1] = have.since end
  end
end
if ARGV[4] == 'check' and nhave == #f then
  local same = true
  for i = 1, #f, 2 do
    if have[f[i]] ~= f[i + 1] then
      same = false
      break
    end
  end
  if same then
    if owner ~= me then
      -- HDEL first: it needs no memory, so the HSET goes through at maxmemory too.
      redis.call('HDEL', KEYS[1], 'owner')
      redis.call('HSET', KEYS[1], 'owner', me)
    end
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', me, unpack(f))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', MAXLEN, '*', 'user', ARGV[1], unpack(f))
return 1
