-- taskapi.ops.claims: the fleet's shared queues in Redis (taskapi.ops.serve's). For each
-- provider two queues of task ids, `poll` (due status reads) and `download` (finalized tasks
-- whose results are to be saved), each a ZSET scored by the time the task is due (ms). A
-- worker claims due members with a lease: the member leaves the queue for the lease ZSET
-- (scored by the lease's end) and the token hash (member -> the claim's token); the worker
-- then releases it (back in its queue at the next due time), finishes it, or renews the
-- lease. A lease that ends (its worker died or stalled) puts the member back in its queue,
-- due at once, at the next claim of anyone. Every time is Redis's own (TIME, inside the
-- scripts), never a worker's clock; each operation is one script, so it is atomic.
--
--   local C = claims.new(conn, prefix, provider)   -- conn: a taskapi.util.redis connection
--   C:claim(kind, n, lease) -> ids, token, next_in (seconds until the next member may be due;
--                              nil: none) | nil, err          kind: "poll" | "download"
--   C:release(kind, id, token, delay, min) -> true | false (the lease was lost) | nil, err
--        back in its queue, due in max(delay, min) seconds from Redis's now
--   C:finish(kind, id, token, outcome) -> true | false | nil, err
--        poll: outcome "download" (moves it to the download queue), "done" or "failed" (the
--        fleet polls it no more); download: off every queue
--   C:renew(kind, id, token, lease) -> true | false | nil, err
--   C:enqueue(poll_ids, download_ids, min) -> number added | nil, err: ids the sweep found
--        (a member already queued, leased or finished is left as it is; a poll is due no
--        sooner than min seconds after the task's last poll)
--   C:lock(name, ttl, token) -> true | false (another holds it) | nil, err
--   C:sizes() -> {poll=, poll_leased=, download=, download_leased=} | nil, err
--
-- Keys, under F = <prefix>:fleet:<provider> (the provider escaped as in taskapi.ledger.redis):
--   F:poll, F:download                zset  id -> due time (ms)
--   F:poll:lease, F:download:lease    zset  id -> the lease's end (ms)
--   F:poll:token, F:download:token    hash  id -> the token of the claim holding it
--   F:last                            hash  id -> when its last poll was answered (ms)
--   F:done                            hash  id -> "download" | "done" | "failed": no more polls
--   F:lock:<name>                     string  a token, with a time to live (the sweep's lock)
local errors = require "taskapi.errors"
local ledger = require "taskapi.ledger"

local M = {}

local KINDS = { poll = true, download = true }

local Claims = {}
Claims.__index = Claims

local esc = require("taskapi.util.redis").key_part
local function ms(s) return string.format("%d", math.floor(s * 1000 + 0.5)) end

--- claims.new(conn, prefix, provider) -> the queues of provider's tasks under prefix.
function M.new(conn, prefix, provider)
  local f = prefix .. ":fleet:" .. esc(provider)
  return setmetatable({ conn = conn, f = f, n = 0 }, Claims)
end

-- The keys of a queue: due, lease, token.
function Claims:_keys(kind)
  local q = self.f .. ":" .. kind
  return q, q .. ":lease", q .. ":token"
end

function Claims:_eval(what, script, keys, args)
  local v, err = self.conn:eval(script, keys, args)
  if v == nil then return nil, ledger.db_err(err, what, "fleet") end
  return v
end

local function check_kind(kind)
  if not KINDS[kind] then return errors.invalid("fleet: the queue must be 'poll' or 'download'") end
  return true
end

-- Redis's now in ms: NOW (a line each script starts with)
local NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

-- KEYS: due, lease, token; ARGV: n, lease ms, token -> {now, next due or -1, id...}
local CLAIM = NOW .. [[
local back = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(back) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
  redis.call('ZADD', KEYS[1], now, m)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = { now, -1 }
local until_ms = now + tonumber(ARGV[2])
for i, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], until_ms, m)
  redis.call('HSET', KEYS[3], m, ARGV[3])
  out[i + 2] = m
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lease = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local best = nxt[2] and tonumber(nxt[2])
if lease[2] and (not best or tonumber(lease[2]) < best) then best = tonumber(lease[2]) end
if best then out[2] = best end
return out
]]

--- Claims up to n due members of queue kind for lease seconds. Returns the ids (an array,
--- maybe empty), the claim's token and the seconds until the next member may be due (a
--- queued one, or a lease that ends), or nil when the queue is empty.
function Claims:claim(kind, n, lease)
  local ok, err = check_kind(kind)
  if not ok then return nil, err end
  self.n = self.n + 1
  local token = (self.worker or "w") .. ":" .. self.n
  local due, leased, tok = self:_keys(kind)
  local v
  v, err = self:_eval("claim", CLAIM, { due, leased, tok }, { n, ms(lease), token })
  if not v then return nil, err end
  local ids = {}
  for i = 3, #v do ids[#ids + 1] = v[i] end
  local nxt = v[2] >= 0 and math.max(0, (v[2] - v[1]) / 1000) or nil
  return ids, token, nxt
end

-- The lease of ARGV[1] held by token ARGV[2] (KEYS[2], KEYS[3]) ended: 0 (returned) when not held.
local HELD = [[
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
]]

-- KEYS: due, lease, token, last; ARGV: id, token, delay ms, min ms, poll (1/0)
local RELEASE = NOW .. HELD .. [[
local d = math.max(tonumber(ARGV[3]), tonumber(ARGV[4]))
if ARGV[5] == '1' then redis.call('HSET', KEYS[4], ARGV[1], now) end
redis.call('ZADD', KEYS[1], now + d, ARGV[1])
return 1
]]

--- Puts a claimed member back in its queue, due max(delay, min) seconds after Redis's now
--- (a poll: its answer's time is kept as the task's last poll). false: the lease was lost.
function Claims:release(kind, id, token, delay, min)
  local ok, err = check_kind(kind)
  if not ok then return nil, err end
  local due, leased, tok = self:_keys(kind)
  local v
  v, err = self:_eval("release", RELEASE, { due, leased, tok, self.f .. ":last" },
    { id, token, ms(delay), ms(min or 0), kind == "poll" and "1" or "0" })
  if not v then return nil, err end
  return v == 1
end

-- KEYS: lease, token (as 2 and 3: KEYS[1] is the download queue), last, done; ARGV: id,
-- token, outcome ("" for a download)
local FINISH = NOW .. HELD .. [[
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], now)
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
  if ARGV[3] == 'download' then redis.call('ZADD', KEYS[1], 'NX', now, ARGV[1]) end
end
return 1
]]

local OUTCOMES = { download = true, done = true, failed = true }

--- Ends a claim for good: a poll whose task is finalized (outcome "download": its results
--- are due in the download queue; "done"; "failed": the fleet gave up on it), or a
--- download whose results are saved. false: the lease was lost.
function Claims:finish(kind, id, token, outcome)
  local ok, err = check_kind(kind)
  if not ok then return nil, err end
  if kind == "poll" and not OUTCOMES[outcome] then return errors.invalid("fleet: finish: unknown outcome") end
  local _, leased, tok = self:_keys(kind)
  local v
  v, err = self:_eval("finish", FINISH, { (self:_keys("download")), leased, tok, self.f .. ":last", self.f .. ":done" },
    { id, token, kind == "poll" and outcome or "" })
  if not v then return nil, err end
  return v == 1
end

-- KEYS: lease, token; ARGV: id, token, lease ms
local RENEW = NOW .. [[
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
]]

--- Extends a held lease to lease seconds from Redis's now. false: the lease was lost.
function Claims:renew(kind, id, token, lease)
  local ok, err = check_kind(kind)
  if not ok then return nil, err end
  local _, leased, tok = self:_keys(kind)
  local v
  v, err = self:_eval("renew", RENEW, { leased, tok }, { id, token, ms(lease) })
  if not v then return nil, err end
  return v == 1
end

-- KEYS: poll, poll lease, download, download lease, last, done; ARGV: min ms, count of poll
-- ids, the poll ids, then the download ids
local ENQUEUE = NOW .. [[
local npoll, added = tonumber(ARGV[2]), 0
for i = 3, #ARGV do
  local m = ARGV[i]
  local queued = redis.call('ZSCORE', KEYS[1], m) or redis.call('ZSCORE', KEYS[2], m) or
    redis.call('ZSCORE', KEYS[3], m) or redis.call('ZSCORE', KEYS[4], m)
  if not queued then
    if i - 2 <= npoll then
      if not redis.call('HGET', KEYS[6], m) then
        local last = tonumber(redis.call('HGET', KEYS[5], m) or '0')
        redis.call('ZADD', KEYS[1], math.max(now, last + tonumber(ARGV[1])), m)
        added = added + 1
      end
    else
      redis.call('HSET', KEYS[6], m, 'download')
      redis.call('ZADD', KEYS[3], now, m)
      added = added + 1
    end
  end
end
return added
]]

M.ENQUEUE_CHUNK = 500 -- ids per enqueue script (a script blocks Redis while it runs)

--- Adds the tasks a sweep of the ledger found: poll_ids (not finalized) and download_ids
--- (finalized, results not saved). Returns how many were added.
function Claims:enqueue(poll_ids, download_ids, min)
  local pq, pl = self:_keys("poll")
  local dq, dl = self:_keys("download")
  local keys = { pq, pl, dq, dl, self.f .. ":last", self.f .. ":done" }
  local all = {}
  for _, id in ipairs(poll_ids) do all[#all + 1] = { id, true } end
  for _, id in ipairs(download_ids) do all[#all + 1] = { id, false } end
  local added = 0
  for i = 1, #all, M.ENQUEUE_CHUNK do
    local args, np = { ms(min or 0), 0 }, 0
    for j = i, math.min(i + M.ENQUEUE_CHUNK - 1, #all) do
      if all[j][2] then np = np + 1 end
      args[#args + 1] = all[j][1]
    end
    args[2] = np
    local v, err = self:_eval("enqueue", ENQUEUE, keys, args)
    if not v then return nil, err end
    added = added + v
  end
  return added
end

--- Takes the lock `name` for ttl seconds unless another token holds it (the lock's holder
--- takes it again, renewing it). true when taken.
function Claims:lock(name, ttl, token)
  local v, err = self:_eval("lock", [[
    local cur = redis.call('GET', KEYS[1])
    if cur and cur ~= ARGV[1] then return 0 end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
  ]], { self.f .. ":lock:" .. name }, { token, ms(ttl) })
  if not v then return nil, err end
  return v == 1
end

--- The queues' sizes: {poll=, poll_leased=, download=, download_leased=}.
function Claims:sizes()
  local pq, pl = self:_keys("poll")
  local dq, dl = self:_keys("download")
  local v, err = self.conn:pipeline({ { "ZCARD", pq }, { "ZCARD", pl }, { "ZCARD", dq }, { "ZCARD", dl } })
  if not v then return nil, ledger.db_err(err, "sizes", "fleet") end
  for i = 1, 4 do
    if type(v[i]) ~= "number" then return nil, ledger.db_err(v[i], "sizes", "fleet") end
  end
  return { poll = v[1], poll_leased = v[2], download = v[3], download_leased = v[4] }
end

return M
