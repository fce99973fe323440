"""The Lua scripts behind the channel quota (app/run/quota.py): every grant is decided in Redis,
so every worker process and host draws from the same counts.

:data:`GRANT` also keeps each academy's *credit*: every grant is owed, by weight, to the
academies sending at that moment or holding a claim on the channel (a broadcast between its
chunk runs), so the academy granted is debited what it took beyond its part and the others are
credited theirs. While an academy sends, its share of each second is its weighted share among
the academies sending now, shifted by its credit against theirs: an academy that was between
chunk runs while the others took the rate gets it back, and a division among two of three
academies at each moment evens out over the time they all have messages waiting. An academy
held to its own cap is neither owed nor charged; one that neither sends nor claims has no credit.
"""

# KEYS: 1 the second's counts, 2 the senders, 3 each academy's weight and cap, 4 the daily
# counts' base key, 5 the last five minutes' seconds, 6 the shares last computed, 7 the credits,
# 8 the claims.
# ARGV: 1 rate, 2 tenant, 3 weight, 4 cap/s (0 none), 5 daily (0 none), 6 wanted, 7 sender,
# 8 its backlog, 9 ADMIT_UNTIL, 10 SEND_UNTIL, 11 OPEN_AT, 12 ACTIVE_SECONDS, 13 DAY_OFFSET,
# 14 CREDIT_SECONDS, 15 the claim this sender renews ('' none), 16 CLAIM_SECONDS,
# 17 CLAIM_GRACE.
# Returns {granted, wait s, send-by s, reason, share, academies sending, used today, the
# second, the day, the academy's credit}.
GRANT = """
local rate, tenant, weight = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local cap, daily, wanted = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local sender, backlog = ARGV[7], tonumber(ARGV[8])
local admit_until, send_until = tonumber(ARGV[9]), tonumber(ARGV[10])
local open_at, active_s, offset = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local credit_s, claim, claim_s = tonumber(ARGV[14]), ARGV[15], tonumber(ARGV[16])
local grace = tonumber(ARGV[17])
local clock = redis.call('TIME')
local sec = tonumber(clock[1])
local now = sec + tonumber(clock[2]) / 1000000
local frac = now - sec
redis.call('HSET', KEYS[3], tenant, weight .. ' ' .. cap)
redis.call('EXPIRE', KEYS[3], 86400)
local function params(t)
  local pw, pc = string.match(redis.call('HGET', KEYS[3], t) or '1 0', '(%S+) (%S+)')
  return tonumber(pw), tonumber(pc)
end

-- Water-filled shares of ``total`` among ``list`` by weight: an academy whose cap is below its
-- weighted part gets its cap (``held``) and the rest is divided among the others.
local function waterfill(list, w, c, total)
  local share, open, held, left = {}, {}, {}, total
  for _, t in ipairs(list) do open[t] = true end
  while true do
    local sumw = 0
    for _, t in ipairs(list) do if open[t] then sumw = sumw + w[t] end end
    if sumw <= 0 then break end
    local capped = {}
    for _, t in ipairs(list) do
      if open[t] and c[t] > 0 and c[t] < left * w[t] / sumw then table.insert(capped, t) end
    end
    if #capped == 0 then
      for _, t in ipairs(list) do if open[t] then share[t] = left * w[t] / sumw end end
      break
    end
    for _, t in ipairs(capped) do
      share[t], held[t], open[t] = c[t], true, nil
      left = left - c[t]
    end
  end
  return share, held
end

local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '-1')
if at ~= sec then
  if at >= 0 then
    redis.call('LPUSH', KEYS[5], cjson.encode(redis.call('HGETALL', KEYS[1])))
    redis.call('LTRIM', KEYS[5], 0, 299)
    redis.call('EXPIRE', KEYS[5], 3600)
  end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'at', sec, 'total', 0)
  redis.call('EXPIRE', KEYS[1], 120)
  -- The credits as the second starts: its allowances (the grants in it count already).
  local stored = redis.call('HGETALL', KEYS[7])
  for i = 1, #stored, 2 do redis.call('HSET', KEYS[1], 'c:' .. stored[i], stored[i + 1]) end
end
if claim ~= '' then
  redis.call('HSET', KEYS[8], claim, tenant .. ' ' .. (now + claim_s))
  redis.call('EXPIRE', KEYS[8], 3600)
end
if backlog > 0 then
  redis.call('HSET', KEYS[2], sender, tenant .. ' ' .. backlog .. ' ' .. now)
else
  redis.call('HDEL', KEYS[2], sender)
end
redis.call('EXPIRE', KEYS[2], 3600)
local names, seen = {}, {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local t, b, last = string.match(entries[i + 1], '(%S+) (%S+) (%S+)')
  if tonumber(last) < now - active_s then
    redis.call('HDEL', KEYS[2], entries[i])
  elseif not seen[t] then
    seen[t] = true
    table.insert(names, t)
  end
end
local sending = {}
for _, t in ipairs(names) do sending[t] = true end
if not seen[tenant] then table.insert(names, tenant) end
table.sort(names)
local w, c = {}, {}
for _, t in ipairs(names) do w[t], c[t] = params(t) end
-- The members: the academies sending now and those claiming the channel between their runs.
local members, member = {}, {}
for _, t in ipairs(names) do
  if sending[t] then table.insert(members, t); member[t] = true end
end
local claims = redis.call('HGETALL', KEYS[8])
for i = 1, #claims, 2 do
  local t, exp = string.match(claims[i + 1], '(%S+) (%S+)')
  if tonumber(exp) < now then
    redis.call('HDEL', KEYS[8], claims[i])
  elseif not member[t] then
    table.insert(members, t); member[t] = true
    if not w[t] then w[t], c[t] = params(t) end
  end
end
table.sort(members)
-- Until CLAIM_GRACE of a second the rate is divided among the members (an academy between
-- its runs keeps its share until its next run has had time to start); after it, among those
-- sending now.
local basis = names
if frac < grace then
  basis = {}
  for _, t in ipairs(members) do table.insert(basis, t) end
  if not member[tenant] then table.insert(basis, tenant) end
end
local share, held = waterfill(basis, w, c, rate)
redis.call('DEL', KEYS[6])
for _, t in ipairs(basis) do redis.call('HSET', KEYS[6], t, tostring(share[t] or 0)) end
redis.call('HSET', KEYS[6], '_rate', tostring(rate))
redis.call('EXPIRE', KEYS[6], 60)
local function per_second(r) return math.floor(r * (sec + 1)) - math.floor(r * sec) end
local mine = share[tenant] or 0
-- What this academy may take before OPEN_AT: its share, shifted by its credit against the
-- others' it is divided with (the shifts of those not held to a cap sum to zero).
local function at_start(t) return tonumber(redis.call('HGET', KEYS[1], 'c:' .. t) or '0') end
local credit = at_start(tenant)
local shifted = mine
if not held[tenant] then
  local sumc, sumw = 0, 0
  for _, t in ipairs(basis) do
    if not held[t] then sumc, sumw = sumc + at_start(t), sumw + w[t] end
  end
  if sumw > 0 then shifted = math.max(0, mine + credit - sumc * weight / sumw) end
end
-- For the history (bench g, jobq stats): each academy's asks this second, which academies
-- were sending at any ask in it, grants made past OPEN_AT and by how many were sending.
if wanted > 0 then redis.call('HINCRBY', KEYS[1], 'a:' .. tenant, 1) end
for _, t in ipairs(names) do
  if sending[t] then redis.call('HSET', KEYS[1], 'in:' .. t, 1) end
end
local day = math.floor((now + offset) / 86400)
local dkey = KEYS[4] .. ':' .. day
local used_d = tonumber(redis.call('HGET', dkey, tenant) or '0')
local function reply(g, wait, reason)
  return {g, tostring(wait), tostring(send_until - frac), reason, tostring(mine), #names,
          used_d, sec, day, tostring(credit)}
end
if wanted <= 0 then  -- a look at the share (a chunk's size): among those sending now
  mine = waterfill(names, w, c, rate)[tenant] or 0
  return reply(0, 0, '')
end
if daily > 0 and used_d >= daily then
  return reply(0, (day + 1) * 86400 - offset - now, 'daily')
end
if frac >= admit_until then return reply(0, 1 - frac, 'second') end
local used_t = tonumber(redis.call('HGET', KEYS[1], 't:' .. tenant) or '0')
local room = per_second(rate) - tonumber(redis.call('HGET', KEYS[1], 'total'))
local allow = per_second(shifted)
if cap > 0 then allow = math.min(allow, per_second(cap)) end
local borrowing = frac >= open_at
if borrowing then allow = (cap > 0) and per_second(cap) or per_second(rate) end
local g = math.max(0, math.min(wanted, allow - used_t, room))
if daily > 0 then g = math.min(g, daily - used_d) end
if g <= 0 then
  if room <= 0 then return reply(0, 1 - frac, 'rate') end
  if cap > 0 and used_t >= per_second(cap) then return reply(0, 1 - frac, 'cap') end
  if borrowing then return reply(0, 1 - frac, 'share') end
  return reply(0, (frac < grace and grace or open_at) - frac, 'share')
end
redis.call('HINCRBY', KEYS[1], 'total', g)
redis.call('HINCRBY', KEYS[1], 't:' .. tenant, g)
redis.call('HINCRBY', KEYS[1], 'p' .. #names .. ':' .. tenant, g)
if borrowing then redis.call('HINCRBY', KEYS[1], 'b:' .. tenant, g) end
-- The grant is owed to every academy sending or claiming now by weight (those held to their
-- cap aside): what this academy took beyond its part is owed to the others. Only they keep a
-- credit: an academy's memory ends when it neither sends nor holds a claim.
local _, mheld = waterfill(members, w, c, rate)
local credits = {}
local stored = redis.call('HGETALL', KEYS[7])
for i = 1, #stored, 2 do credits[stored[i]] = tonumber(stored[i + 1]) end
local allw = 0
for _, t in ipairs(members) do if not mheld[t] then allw = allw + w[t] end end
redis.call('DEL', KEYS[7])
for _, t in ipairs(members) do
  if not mheld[t] then
    local cr = credits[t] or 0
    if not mheld[tenant] then
      cr = cr + g * w[t] / allw
      if t == tenant then cr = cr - g end
    end
    local bound = credit_s * rate * w[t] / allw
    cr = math.max(-bound, math.min(bound, cr))
    if cr ~= 0 then redis.call('HSET', KEYS[7], t, tostring(cr)) end
  end
end
redis.call('EXPIRE', KEYS[7], 120)
redis.call('HINCRBY', dkey, tenant, g)
redis.call('EXPIRE', dkey, 3 * 86400)
used_d = used_d + g
return reply(g, 0, '')
"""

# KEYS: 1 the second's counts, 2 the daily counts' base key. ARGV: tenant, count, second, day.
GIVE_BACK = """
if tonumber(redis.call('HGET', KEYS[1], 'at') or '-1') == tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[1], 'total', -tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 't:' .. ARGV[1], -tonumber(ARGV[2]))
end
redis.call('HINCRBY', KEYS[2] .. ':' .. ARGV[4], ARGV[1], -tonumber(ARGV[2]))
return 1
"""
