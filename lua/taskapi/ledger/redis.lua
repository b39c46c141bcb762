-- taskapi.ledger.redis: the ledger in Redis, for processes and nginx nodes on several
-- machines (taskapi.ledger.open("redis://HOST:PORT/DB?prefix=NAME")). The same records and
-- queries as the SQLite store, in the same order; each write is one Lua script (EVALSHA), so
-- it is atomic. The client is taskapi.util.redis (libhiredis in plain Lua, resty.redis on
-- cosockets inside nginx). What Redis keeps is what its persistence keeps: run it with
-- `appendonly yes` (see the README).
--
-- Keys, all under the prefix P (the URL's prefix, "taskapi" when none). In key names a
-- provider, a task id and an output name are escaped ("%" -> "%25", ":" -> "%3A"), and
-- T = <provider>:<task id> so escaped:
--   P:schema              string  the schema's version (taskapi.ledger.SCHEMA)
--   P:seq                 string  the last event number (INCR): the ledger's order of things
--   P:events              list    one JSON object per event {seq, provider, task_id, state,
--                                 progress, at}, in seq order
--   P:intents             zset    request ids, scored by their intent's event
--   P:intent:<rid>        hash    an intent: rid provider type endpoint digest at outcome
--                                 task_id error settled_at seq settled_seq
--   P:tasks               zset    T of every task, scored by its first event (insertion)
--   P:tasks:<provider>    zset    T of that provider's tasks, the same scores
--   P:byid:<task id>      zset    the providers that have a task of that id, the same scores
--   P:task:<T>            hash    a task: provider id type state done ok progress rid task
--                                 (the compact JSON) first_at updated_at order (its score)
--   P:files:<T>           set     the (escaped) output names of its saved files
--   P:file:<T>:<name>     hash    a saved file: provider task_id name path bytes sha256
--                                 mtime saves adopted at
-- Numbers are stored as decimal strings (mtime with 17 digits: it reads back exactly).
-- The scripts touch keys they build from P (one Redis, not a Redis Cluster).
local core = require "taskapi.core"
local errors = require "taskapi.errors"
local ledger = require "taskapi.ledger"
local redis = require "taskapi.util.redis"

local db_err = ledger.db_err

local M = {}

M.PREFIX = "taskapi"

local Store = ledger.class()
M.Store = Store
ledger.register(Store)

local esc = require("taskapi.util.redis").key_part
local function num(v) return v == nil and "" or string.format(v % 1 == 0 and "%d" or "%.17g", v) end

function Store:_tkey(provider, id) return esc(provider) .. ":" .. esc(id) end

-- Runs a script; its error becomes "ledger: what: ..." (a transport error keeps its kind).
function Store:_eval(what, script, keys, args)
  if not self.db then return ledger.closed(what) end
  local v, err = self.db:eval(script, keys, args)
  if v == nil then return nil, db_err(err, what) end
  return v
end

--- open(url, opts) -> ledger | nil, err. The URL's prefix names the ledger (several
--- ledgers share one Redis under different prefixes); opts: timeout (seconds a command may
--- take; 5).
function M.open(url, opts)
  local ok, err = ledger.check_keys("ledger", opts, { timeout = true })
  if not ok then return nil, err end
  local o
  o, err = redis.parse(url)
  if not o then return nil, err end
  if opts.timeout ~= nil then o.timeout = opts.timeout end
  local prefix = o.prefix or M.PREFIX
  o.prefix = nil
  local conn
  conn, err = redis.connect(o)
  if not conn then return nil, db_err(err, "cannot open '" .. url:sub(1, 200) .. "'") end
  local L = setmetatable({ db = conn, path = url, prefix = prefix, seen = {} }, Store)
  -- the schema's version: set when new, refused when newer
  local v
  v, err = L:_eval("schema", [[
    redis.call('SETNX', KEYS[1], ARGV[1])
    return tonumber(redis.call('GET', KEYS[1]))
  ]], { prefix .. ":schema" }, { ledger.SCHEMA })
  if not v or v > ledger.SCHEMA then
    conn:close()
    L.db = nil
    if not v then return nil, err end
    return nil, db_err("schema version " .. v .. " is newer than this taskapi's (" .. ledger.SCHEMA .. ")", "'" .. url:sub(1, 200) .. "'")
  end
  return L
end

-- A write: true | nil, err
function Store:_write(what, script, keys, args)
  local v, err = self:_eval(what, script, keys, args)
  if v == nil then return nil, err end
  return true
end

----------------------------------------------------------------------------------------------
-- writes: one script each

-- every write script starts with this: the next event, pushed on P:events
-- KEYS[1] P:seq, KEYS[2] P:events; ev(provider, task_id, state, progress, at) -> seq
local EVENT = [[
local function ev(provider, task_id, state, progress, at)
  local seq = redis.call('INCR', KEYS[1])
  redis.call('RPUSH', KEYS[2], cjson.encode({ seq = seq, provider = provider, task_id = task_id, state = state,
    progress = tonumber(progress), at = tonumber(at) }))
  return seq
end
-- a new task's hash and its place in the three indexes (KEYS[4] P:task:T, KEYS[5] P:tasks,
-- KEYS[6] P:tasks:<provider>, KEYS[7] P:byid:<id>)
local function new_task(tkey, provider, id, typ, rid, at, seq)
  redis.call('HSET', KEYS[4], 'provider', provider, 'id', id, 'state', 'queued', 'done', 0, 'ok', 0,
    'first_at', at, 'updated_at', at, 'order', seq)
  if typ ~= '' then redis.call('HSET', KEYS[4], 'type', typ) end
  if rid ~= '' then redis.call('HSET', KEYS[4], 'rid', rid) end
  redis.call('ZADD', KEYS[5], seq, tkey)
  redis.call('ZADD', KEYS[6], seq, tkey)
  redis.call('ZADD', KEYS[7], seq, provider)
end
]]

-- KEYS: seq events intent; ARGV: rid provider type endpoint digest at
local INTENT = EVENT .. [[
local seq = ev(ARGV[2], ARGV[1], 'intent', nil, ARGV[6])
redis.call('HSET', KEYS[3], 'rid', ARGV[1], 'provider', ARGV[2], 'type', ARGV[3], 'digest', ARGV[5], 'at', ARGV[6],
  'seq', seq)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], 'endpoint', ARGV[4]) end
redis.call('ZADD', KEYS[8], seq, ARGV[1])
return seq
]]

function Store:_keys(provider, id, rid)
  local P, tk = self.prefix, id and self:_tkey(provider, id) or ""
  return {
    P .. ":seq", P .. ":events", P .. ":intent:" .. (rid or ""), P .. ":task:" .. tk, P .. ":tasks",
    P .. ":tasks:" .. esc(provider), P .. ":byid:" .. esc(id or ""), P .. ":intents",
  }, tk
end

function Store:_intent(rid, provider, typ, endpoint, digest, t)
  return self:_write("intent", INTENT, self:_keys(provider, nil, rid), { rid, provider, typ, endpoint or "", digest, t })
end

-- KEYS: seq events intent task tasks ptasks byid; ARGV: rid provider type id outcome message at tkey
local OUTCOME = EVENT .. [[
local rid, provider, id, outcome, at = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[7]
local known = redis.call('EXISTS', KEYS[3]) == 1
if outcome == 'created' then
  local seq = ev(provider, id, 'created', nil, at)
  if known then
    redis.call('HSET', KEYS[3], 'outcome', 'created', 'task_id', id, 'settled_at', at, 'settled_seq', seq)
  end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'rid', rid)
  else new_task(ARGV[8], provider, id, ARGV[3], rid, at, seq) end
else
  local seq = ev(provider, rid, outcome, nil, at)
  if known then
    redis.call('HSET', KEYS[3], 'outcome', outcome, 'error', ARGV[6], 'settled_at', at, 'settled_seq', seq)
  end
end
return 1
]]

function Store:_outcome(rid, provider, typ, id, outcome, message, t)
  local keys, tk = self:_keys(provider, id, rid)
  return self:_write("outcome", OUTCOME, keys, { rid, provider, typ or "", id or "", outcome, message or "", t, tk })
end

-- KEYS: seq events (unused) task tasks ptasks byid; ARGV: provider id type state done ok progress text at tkey
local TASK = EVENT .. [[
local h = KEYS[4]
local cur = redis.call('HMGET', h, 'state', 'done', 'task')
local exists = redis.call('EXISTS', h) == 1
if exists and cur[1] == ARGV[4] and cur[2] == ARGV[5] and cur[3] then return 0 end
local seq = ev(ARGV[1], ARGV[2], ARGV[4], ARGV[7], ARGV[9])
if not exists then new_task(ARGV[10], ARGV[1], ARGV[2], ARGV[3], '', ARGV[9], seq) end
redis.call('HSET', h, 'state', ARGV[4], 'done', ARGV[5], 'ok', ARGV[6], 'task', ARGV[8], 'updated_at', ARGV[9])
if ARGV[3] ~= '' then redis.call('HSET', h, 'type', ARGV[3]) end
if ARGV[7] ~= '' then redis.call('HSET', h, 'progress', ARGV[7]) else redis.call('HDEL', h, 'progress') end
return 1
]]

function Store:_task(task, text, t)
  local keys, tk = self:_keys(task.provider, task.id)
  return self:_write("task state", TASK, keys, { task.provider, task.id, task.type or "", task.state,
    task.done and 1 or 0, task.ok and 1 or 0, num(task.progress), text, t, tk })
end

-- KEYS: file hash, files set; ARGV: provider id name escaped_name path bytes sha256 mtime adopted at
local FILE = [[
local h = KEYS[1]
if redis.call('EXISTS', h) == 1 then
  redis.call('HINCRBY', h, 'saves', 1 - tonumber(ARGV[9]))
else
  redis.call('HSET', h, 'provider', ARGV[1], 'task_id', ARGV[2], 'name', ARGV[3], 'saves', 1, 'adopted', ARGV[9])
  redis.call('SADD', KEYS[2], ARGV[4])
end
redis.call('HSET', h, 'path', ARGV[5], 'bytes', ARGV[6], 'at', ARGV[10])
if ARGV[7] ~= '' then redis.call('HSET', h, 'sha256', ARGV[7]) else redis.call('HDEL', h, 'sha256') end
if ARGV[8] ~= '' then redis.call('HSET', h, 'mtime', ARGV[8]) else redis.call('HDEL', h, 'mtime') end
return 1
]]

function Store:_file(task, name, path, bytes, sha, mtime, adopted, t)
  local tk, P = self:_tkey(task.provider, task.id), self.prefix
  return self:_write("file", FILE, { P .. ":file:" .. tk .. ":" .. esc(name), P .. ":files:" .. tk },
    { task.provider, task.id, name, esc(name), path, num(bytes), sha or "", num(mtime), adopted, t })
end

-- KEYS: seq events intent task tasks ptasks byid; ARGV: rid provider id type at tkey
local RECONCILED = EVENT .. [[
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local seq = ev(ARGV[2], ARGV[3], 'reconciled', nil, ARGV[5])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'outcome', 'reconciled', 'task_id', ARGV[3], 'settled_at', ARGV[5])
end
new_task(ARGV[6], ARGV[2], ARGV[3], ARGV[4], ARGV[1], ARGV[5], seq)
return 1
]]

function Store:_reconciled(rid, provider, id, typ, t)
  local keys, tk = self:_keys(provider, id, rid)
  local v, err = self:_eval("reconcile", RECONCILED, keys, { rid, provider, id, typ or "", t, tk })
  if v == nil then return nil, err end
  return v == 1
end

----------------------------------------------------------------------------------------------
-- reads: one script each, so that a read sees one moment of the ledger

-- KEYS[1] a zset of T (or none: ARGV[2..] are the T to read); ARGV[1] P. For each T: the
-- task's hash and the hashes of its files, as flat arrays.
local READ = [[
local P, list = ARGV[1], {}
if #KEYS > 0 then list = redis.call('ZRANGE', KEYS[1], 0, -1) else for i = 2, #ARGV do list[#list + 1] = ARGV[i] end end
local out = {}
for i, tk in ipairs(list) do
  local files = {}
  for j, n in ipairs(redis.call('SMEMBERS', P .. ':files:' .. tk)) do
    files[j] = redis.call('HGETALL', P .. ':file:' .. tk .. ':' .. n)
  end
  out[i] = { redis.call('HGETALL', P .. ':task:' .. tk), files }
end
return out
]]

local NUMBERS = {
  done = true, ok = true, progress = true, first_at = true, updated_at = true, order = true, -- tasks
  bytes = true, mtime = true, saves = true, adopted = true, -- files (and at)
  at = true, settled_at = true, seq = true, settled_seq = true, -- intents
}

-- A flat HGETALL array as a row: numbers where the SQLite ledger has numbers.
local function row_of(flat)
  local r = {}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    if NUMBERS[k] then v = tonumber(v) end
    r[k] = v
  end
  return r
end

local function by_name(a, b)
  if a.provider ~= b.provider then return a.provider < b.provider end
  return a.name < b.name
end

local function oldest(a, b)
  if a.first_at ~= b.first_at then return a.first_at < b.first_at end
  return a.order < b.order
end

-- rows and file rows from READ's answer, oldest first
local function task_rows(answer)
  local items = {}
  for i, it in ipairs(answer) do
    local row = row_of(it[1])
    if row.id then -- (a hash read while another process wrote it is complete: scripts are atomic)
      local files = {}
      for j, f in ipairs(it[2]) do files[j] = row_of(f) end
      table.sort(files, by_name)
      items[#items + 1] = { row = row, files = files, i = i }
    end
  end
  table.sort(items, function(a, b) return oldest(a.row, b.row) end)
  local rows, files = {}, {}
  for i, it in ipairs(items) do
    it.row.order = nil
    rows[i], files[i] = it.row, it.files
  end
  return rows, files
end

function Store:_task_rows(provider)
  local key = self.prefix .. (provider and ":tasks:" .. esc(provider) or ":tasks")
  local answer, err = self:_eval("tasks", READ, { key }, { self.prefix })
  if not answer then return nil, err end
  return task_rows(answer)
end

-- the T of the tasks of id (of provider, or of every provider that has one)
function Store:_tkeys(what, id, provider)
  if provider then return { self:_tkey(provider, id) } end
  local list, err = self.db:call("ZRANGE", self.prefix .. ":byid:" .. esc(id), 0, -1)
  if not list then return nil, db_err(err, what) end
  local out = {}
  for i, p in ipairs(list) do out[i] = self:_tkey(p, id) end
  return out
end

function Store:_read(what, tkeys)
  local args = { self.prefix }
  for _, tk in ipairs(tkeys) do args[#args + 1] = tk end
  local answer, err = self:_eval(what, READ, {}, args)
  if not answer then return nil, err end
  return task_rows(answer)
end

function Store:_task_row(id, provider)
  local tkeys, err = self:_tkeys("get", id, provider)
  if not tkeys then return nil, err end
  local rows, files = self:_read("get", tkeys)
  if not rows then return nil, files end
  if not rows[1] then return nil end
  return rows[1], files[1]
end

function Store:files(id, provider)
  if not self.db then return ledger.closed("files") end
  local tkeys, err = self:_tkeys("files", id, provider)
  if not tkeys then return nil, err end
  local rows, files = self:_read("files", tkeys)
  if not rows then return nil, files end
  local out = {}
  for _, list in ipairs(files) do
    for _, f in ipairs(list) do out[#out + 1] = f end
  end
  table.sort(out, by_name)
  return out
end

-- KEYS[1] P:intents; ARGV[1] the prefix of intent hashes
local READ_INTENTS = [[
local out = {}
for i, rid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do out[i] = redis.call('HGETALL', ARGV[1] .. rid) end
return out
]]

function Store:_intent_rows()
  local P = self.prefix
  local answer, err = self:_eval("intents", READ_INTENTS, { P .. ":intents" }, { P .. ":intent:" })
  if not answer then return nil, err end
  local rows = {}
  for i, flat in ipairs(answer) do rows[i] = row_of(flat) end
  table.sort(rows, function(a, b)
    if a.at ~= b.at then return a.at < b.at end
    return a.seq < b.seq
  end)
  return rows
end

function Store:_event_rows()
  local list, err = self.db:call("LRANGE", self.prefix .. ":events", 0, -1)
  if not list then return nil, db_err(err, "events") end
  local rows = {}
  for i, text in ipairs(list) do
    local e = core.json_decode(text)
    if type(e) ~= "table" then return nil, errors.new("io", "ledger: events: event " .. i .. " is not JSON") end
    rows[i] = e
  end
  return rows
end

-- KEYS[1] P:tasks:<provider>; ARGV[1] P:task:
local IDS = [[
local out = {}
for i, tk in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do out[i] = redis.call('HGET', ARGV[1] .. tk, 'id') end
return out
]]

--- The ids of provider's tasks in the ledger, as a set.
function Store:ids(provider)
  local P = self.prefix
  local list, err = self:_eval("ids", IDS, { P .. ":tasks:" .. esc(provider) }, { P .. ":task:" })
  if not list then return nil, err end
  local set = {}
  for _, id in ipairs(list) do if type(id) == "string" then set[id] = true end end
  return set
end

return M
