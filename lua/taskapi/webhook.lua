-- taskapi.webhook: Tripo's signed webhook deliveries. Tripo POSTs
--   {"id", "type": "task.completed" | "task.failed" | "balance.low", "created_at", "data": <task>}
-- with `Tripo-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`
-- (several v1 entries may come while a secret rotates; any one matching is enough),
-- `Tripo-Webhook-Id` (the endpoint), `Tripo-Webhook-Delivery` (one per delivery: a retry of the
-- same delivery keeps it) and `Tripo-Webhook-Event`.
--
--   local ev, err = webhook.verify(secret, headers, raw_body [, now])  -- checks, decodes
--   local rx = webhook.new{ secret = "whsec_...", store = nil | ngx.shared.DICT | {add=} }
--   local ev, err = rx:handle(headers, raw_body)   -- verify, drop a delivery seen before
--                                                  -- (ev.duplicate), notify the waits
--
-- It also owns the notification point between deliveries and waits in this process (one
-- nginx worker inside OpenResty): subscribe/unsubscribe/notify by task id, and hook(), the
-- piece taskapi.ops.wait uses so that a delivery ends a wait's sleep at once (the wait then polls
-- the task; polling stays the fallback when no delivery comes).
local core = require "taskapi.core"
local backend = require "taskapi.run.backend"
local errors = require "taskapi.errors"
local heap = require "taskapi.util.heap"
local provider = require "taskapi.api.provider"

local M = {}

M.TOLERANCE = 300     -- seconds: a signature's timestamp may be this far from now, either way
M.DEDUP_SIZE = 4096   -- delivery ids an in-memory receiver remembers (least recently seen go)
M.DEDUP_TTL = 86400   -- seconds a delivery id stays in an ngx.shared dict
M.TASK_EVENTS = { ["task.completed"] = true, ["task.failed"] = true }

local SIG = "tripo-webhook-signature"

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- Every value of header `name` (lower case) in a table of any key case, where a value may be
-- a string or an array of strings (ngx.req.get_headers gives arrays for repeated headers).
local function values(headers, name)
  local out = {}
  for k, v in pairs(headers) do
    if type(k) == "string" and k:lower() == name then
      if type(v) == "table" then
        for i = 1, #v do out[#out + 1] = tostring(v[i]) end
      elseif v ~= nil then
        out[#out + 1] = tostring(v)
      end
    end
  end
  return out
end

local function first(headers, name)
  local v = values(headers, name)[1]
  if v then v = trim(v) end
  if v == "" then return nil end
  return v
end

-- "t=<digits>,v1=<hex>[,v1=<hex>...]" -> t (string, as signed), {v1...} | nil, message
local function parse_signature(list)
  if #list == 0 then return nil, "missing Tripo-Webhook-Signature header" end
  local value = table.concat(list, ",") -- repeated headers are one comma-separated list
  if #value > 8192 then return nil, "malformed Tripo-Webhook-Signature header: " .. #value .. " bytes long" end
  local t, sigs = nil, {}
  for part in (value .. ","):gmatch("([^,]*),") do
    part = trim(part)
    if part ~= "" then
      local k, v = part:match("^([^=]-)%s*=%s*(.-)$")
      if not k or k == "" or v == "" then
        return nil, "malformed Tripo-Webhook-Signature header: entry '" .. part:sub(1, 40) .. "' is not key=value"
      end
      if k == "t" then
        if not v:match("^%d+$") or #v > 12 then
          return nil, "malformed Tripo-Webhook-Signature header: timestamp t='" .. v:sub(1, 20) .. "' is not Unix seconds"
        end
        if t and t ~= v then return nil, "malformed Tripo-Webhook-Signature header: two different timestamps" end
        t = v
      elseif k == "v1" then
        sigs[#sigs + 1] = v:lower()
      end
    end
  end
  if not t then return nil, "malformed Tripo-Webhook-Signature header: no timestamp (t=)" end
  if #sigs == 0 then return nil, "malformed Tripo-Webhook-Signature header: no v1 signature" end
  return t, sigs
end

local function bad(message, fields) return nil, errors.new("bad_response", message, fields) end

--- Verifies one delivery and decodes it. secret: the endpoint's signing secret, whsec_ prefix
--- included; headers: the request's headers (any case; values strings or arrays); raw_body:
--- the body exactly as received; now: Unix seconds (default os.time()). Returns the event
--- {type=, id=, delivery=, webhook_id=, created_at=, task= (task events: the normalized task),
--- data=, raw=} or nil, err: invalid_argument (bad arguments), auth (no or malformed signature
--- header, a signature that does not match, a timestamp more than M.TOLERANCE s away),
--- bad_response (a signed body that is not the documented envelope).
function M.verify(secret, headers, raw_body, now)
  if type(secret) ~= "string" or secret == "" then
    return errors.invalid("webhook secret must be a non-empty string (the endpoint's whsec_... value), got " ..
      (secret == "" and "an empty string" or type(secret)))
  end
  if type(headers) ~= "table" then return errors.invalid("webhook headers must be a table, got " .. type(headers)) end
  if type(raw_body) ~= "string" then
    return errors.invalid("webhook body must be the raw request body as a string, got " .. type(raw_body))
  end
  if now == nil then now = os.time() end
  if type(now) ~= "number" or now ~= now or now == math.huge or now == -math.huge then
    return errors.invalid("webhook 'now' must be a finite number of Unix seconds")
  end
  local delivery, webhook_id = first(headers, "tripo-webhook-delivery"), first(headers, "tripo-webhook-id")
  local fields = { delivery = delivery }
  local t, sigs = parse_signature(values(headers, SIG))
  if not t then return nil, errors.new("auth", sigs, fields) end
  local skew = now - tonumber(t)
  if skew > M.TOLERANCE or skew < -M.TOLERANCE then
    return nil, errors.new("auth", string.format("webhook timestamp t=%s is %d s in the %s (more than %d s away): " ..
      "a replayed delivery or a wrong clock", t, math.floor(math.abs(skew)), skew > 0 and "past" or "future", M.TOLERANCE), fields)
  end
  local expected = core.hmac_sha256(secret, t .. "." .. raw_body)
  local match = false
  for i = 1, #sigs do
    if core.equal(expected, sigs[i]) then match = true end -- every entry compared, no early exit
  end
  if not match then
    return nil, errors.new("auth", "webhook signature does not match (a wrong secret, or the body changed on the way)", fields)
  end
  local body = core.json_decode(raw_body)
  if type(body) ~= "table" or body[1] ~= nil then return bad("webhook body is not a JSON object", fields) end
  local typ, id, data = body.type, body.id, body.data
  if type(typ) ~= "string" or typ == "" then return bad("webhook body has no 'type' string", fields) end
  if type(id) == "number" then id = string.format("%.0f", id) end
  if type(id) ~= "string" or id == "" then return bad("webhook body has no 'id'", fields) end
  if type(data) ~= "table" then return bad("webhook body (" .. typ .. ") has no 'data' object", fields) end
  local created_at = body.created_at
  if created_at == core.null then created_at = nil end
  local ev = {
    type = typ, id = id, delivery = delivery, webhook_id = webhook_id, created_at = created_at,
    data = data, raw = body,
  }
  if M.TASK_EVENTS[typ] then
    local tid = data.task_id
    if type(tid) ~= "string" or tid == "" then return bad("webhook " .. typ .. " has no data.task_id", fields) end
    fields.task_id = tid
    local def, derr = provider.load("tripo")
    if not def then return nil, derr end
    local ok, task, terr = pcall(provider.task, def, data, tid, nil, core.null)
    if not ok then return bad("webhook " .. typ .. ": cannot read its task: " .. tostring(task), fields) end
    if not task then return bad("webhook " .. typ .. ": " .. tostring(terr and terr.message), fields) end
    -- a task.failed may carry {error = {code, message}} rather than error_code/error_message
    if task.error == nil and type(data.error) == "table" then
      task.error = { code = data.error.code ~= core.null and data.error.code or nil,
        message = type(data.error.message) == "string" and data.error.message or nil }
    end
    ev.task = task
  end
  return ev
end

----------------------------------------------------------------------------------------------
-- Deduplication: a store with add(key, value, ttl) -> true when new, or false, "exists"
-- (the method of ngx.shared.DICT; M.lru is the in-memory one).

local LRU = {}
LRU.__index = LRU

--- An in-memory store of at most `size` keys (M.DEDUP_SIZE); the least recently seen go first.
function M.lru(size)
  return setmetatable({ size = size or M.DEDUP_SIZE, n = 0, map = {}, head = nil, tail = nil }, LRU)
end

local function unlink(self, node)
  if node.prev then node.prev.next = node.next else self.head = node.next end
  if node.next then node.next.prev = node.prev else self.tail = node.prev end
  node.prev, node.next = nil, nil
end

local function push_front(self, node)
  node.next = self.head
  if self.head then self.head.prev = node end
  self.head = node
  if not self.tail then self.tail = node end
end

function LRU:add(key)
  local node = self.map[key]
  if node then
    unlink(self, node)
    push_front(self, node)
    return false, "exists"
  end
  node = { key = key }
  self.map[key] = node
  push_front(self, node)
  self.n = self.n + 1
  if self.n > self.size then
    local old = self.tail
    unlink(self, old)
    self.map[old.key] = nil
    self.n = self.n - 1
  end
  return true
end

function LRU:count() return self.n end

local Receiver = {}
Receiver.__index = Receiver

--- A receiver: opts secret (required), store (an ngx.shared.DICT, or any object with
--- add(key, value, ttl); default M.lru(size)), size (M.DEDUP_SIZE), ttl (M.DEDUP_TTL, for
--- shared dicts), on_event(ev) (called once per new verified delivery). Making one turns on
--- the wait hook in this process (waits started from now on listen for deliveries).
function M.new(opts)
  if type(opts) ~= "table" then return errors.invalid("webhook.new expects a table {secret=, store=}") end
  if type(opts.secret) ~= "string" or opts.secret == "" then
    return errors.invalid("webhook.new: secret must be a non-empty string (the endpoint's whsec_... value)")
  end
  local size = opts.size
  if size ~= nil and (type(size) ~= "number" or size < 1 or size % 1 ~= 0) then
    return errors.invalid("webhook.new: size must be a positive whole number")
  end
  local store = opts.store or M.lru(size)
  local ok, add = pcall(function() return store.add end)
  if not ok or type(add) ~= "function" then
    return errors.invalid("webhook.new: store must have an add(key, value, ttl) method (an ngx.shared dict)")
  end
  if opts.on_event ~= nil and type(opts.on_event) ~= "function" then
    return errors.invalid("webhook.new: on_event must be a function")
  end
  M.enabled = true
  return setmetatable({ secret = opts.secret, store = store, ttl = opts.ttl or M.DEDUP_TTL, on_event = opts.on_event }, Receiver)
end

--- Verifies a delivery (see M.verify); a delivery id seen before gives the event with
--- duplicate = true and nothing else happens; a new one notifies the waits on its task and
--- calls on_event. Returns the event or nil, err.
function Receiver:handle(headers, raw_body, now)
  local ev, err = M.verify(self.secret, headers, raw_body, now)
  if not ev then return nil, err end
  -- a delivery without its header is told apart by the event id (task id and event type)
  local key = ev.delivery and ("delivery:" .. ev.delivery) or ("event:" .. ev.id)
  local new, serr = self.store:add(key, true, self.ttl)
  if not new and (serr == "exists" or serr == nil) then
    ev.duplicate = true
    return ev
  end
  -- any other store failure (a full shared dict): handled as new, twice rather than never
  if ev.task then ev.notified = M.notify(ev.task) end
  if self.on_event then self.on_event(ev) end
  return ev
end

----------------------------------------------------------------------------------------------
-- The notification point: listeners by task id, in this process (this nginx worker).

local listeners = {} -- task id -> { [token] = true } (weak keys: a token dropped unsubscribes)

--- Calls fn(task) when a verified delivery about task_id arrives (Receiver:handle, or
--- M.notify). Returns a token for unsubscribe; keep it: the subscription lives as long as
--- the token does.
function M.subscribe(task_id, fn)
  local token = { id = tostring(task_id), fn = fn }
  local set = listeners[token.id]
  if not set then
    set = setmetatable({}, { __mode = "k" })
    listeners[token.id] = set
  end
  set[token] = true
  return token
end

function M.unsubscribe(token)
  local set = token and listeners[token.id]
  if not set then return end
  set[token] = nil
  if next(set) == nil then listeners[token.id] = nil end
end

--- Tells the listeners of task.id (or of a task id) that it changed; returns how many there
--- were. A listener's error does not stop the others (it is returned as the second value).
function M.notify(task)
  local id = type(task) == "table" and task.id or task
  local set = id ~= nil and listeners[tostring(id)]
  if not set then return 0 end
  local list = {}
  for token in pairs(set) do list[#list + 1] = token end
  if #list == 0 then listeners[tostring(id)] = nil end
  local first_err
  for i = 1, #list do
    local ok, err = pcall(list[i].fn, task)
    if not ok and not first_err then first_err = err end
  end
  return #list, first_err
end

--- How many listeners task_id has (for status pages and specs).
function M.listening(task_id)
  local set = listeners[tostring(task_id)]
  local n = 0
  if set then for _ in pairs(set) do n = n + 1 end end
  return n
end

----------------------------------------------------------------------------------------------
-- The wait hook (used by taskapi.ops.wait). A hook watches wait states {sid=, at=} and sleeps
-- in place of backend.sleep; a delivery for a watched task sets its state's `at` to now
-- (moving it to the front of `heap`, the array of a taskapi.util.heap, when it is there), ends
-- every sleep of the hook at once (or the next one, when it comes while none is under way)
-- and calls on_wake(). Until a receiver exists (M.new) or M.enabled is set, hook() returns a
-- stub that only sleeps, so waits cost nothing more without webhooks.

-- Lowers item.at to `at` inside the heap array h and restores the heap order (sift up);
-- false when item is not in h.
local function raise(h, item, at)
  for i = 1, #h do
    if h[i] == item then
      if item.at <= at then return true end -- already due
      item.at = at
      while i > 1 do
        local p = (i - i % 2) / 2
        local q = h[p]
        if q.at < at or (q.at == at and q.seq < item.seq) then break end
        h[i], h[p] = q, item
        i = p
      end
      return true
    end
  end
  return false
end

local Hook = {}
Hook.__index = Hook

local Stub = {}
Stub.__index = Stub
function Stub:watch() return self end
function Stub:sleep(seconds) return backend.sleep(self.client, seconds) end
function Stub:close() end

local NGX_YIELDS = { content = true, timer = true, rewrite = true, access = true }

--- hook(client [, queue [, on_wake]]) -> a hook (see above); queue: a taskapi.util.heap of wait states.
function M.hook(client, queue, on_wake)
  if not M.enabled then return setmetatable({ client = client }, Stub) end
  return setmetatable({ client = client, heap = queue, on_wake = on_wake, tokens = {}, sleepers = {}, pending = {}, rung = false }, Hook)
end

function Hook:watch(w)
  local hook = self
  self.tokens[#self.tokens + 1] = M.subscribe(w.sid, function(task)
    w.delivered = task
    local now = backend.now(hook.client)
    -- not in the heap: its poll is under way; moved when it is back (Hook:sleep)
    if hook.heap and not raise(hook.heap, w, now) then hook.pending[w] = true end
    hook:wake()
  end)
  return self
end

function Hook:wake()
  local any = false
  for s in pairs(self.sleepers) do
    any = true
    self.sleepers[s] = nil
    s.wake()
  end
  if not any then self.rung = true end -- a delivery during a poll: the next sleep is skipped
  if self.on_wake then self.on_wake() end
end

--- Sleeps like backend.sleep(client, seconds); returns true when a delivery ended it early.
function Hook:sleep(seconds)
  if seconds ~= seconds or seconds <= 0 then return false end
  if next(self.pending) then
    local now = backend.now(self.client)
    for w in pairs(self.pending) do
      if raise(self.heap, w, now) then self.pending[w] = nil self.rung = true end
    end
  end
  if self.rung then
    self.rung = false
    return true
  end
  local client = self.client
  if client and client.transport then backend.sleep(client, seconds) return false end -- its own clock
  local s = backend.active("plain")
  if s then
    -- the plain scheduler: a timer of its own in the scheduler's heap; a delivery moves it to
    -- the front as cancelled (so the loop never sleeps on it) and wakes the coroutine.
    -- (Scheduler internals: heap, _park, _wake. A timed wait in taskapi.run.scheduler would do.)
    local co = coroutine.running()
    local item = { at = core.now() + seconds, co = co }
    heap.push(s.heap, item)
    local early = false
    local sleeper = { wake = function()
      if raise(s.heap, item, -math.huge) then -- still pending: not woken by its timer yet
        item.cancelled, early = true, true
        s:_wake(co, nil)
      end
    end }
    self.sleepers[sleeper] = true
    s:_park()
    self.sleepers[sleeper] = nil
    return early
  end
  if backend.active("ngx") and ngx and NGX_YIELDS[ngx.get_phase()] then
    local sema = require("ngx.semaphore").new(0)
    local sleeper = { wake = function() sema:post(1) end }
    self.sleepers[sleeper] = true
    local woken = sema:wait(seconds)
    self.sleepers[sleeper] = nil
    return woken == true
  end
  backend.sleep(client, seconds)
  return false
end

function Hook:close()
  for i = 1, #self.tokens do M.unsubscribe(self.tokens[i]) end
  self.tokens, self.pending = {}, {}
end

return M
