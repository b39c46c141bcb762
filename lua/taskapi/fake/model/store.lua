-- taskapi.fake.model.store: the model's state: its options, the API keys and their accounts,
-- the tasks (made by a spec, POST /_fake/tasks or a create), the id counter, the request log
-- and the create counts of /_fake/stats. Provider details of a task come from the provider's
-- file through Model.TASK_KINDS (set by taskapi.fake.model).
local B = require "taskapi.fake.model.base"
local faults = require "taskapi.fake.model.faults"
local json = require "taskapi.json"

local P = { Model = {} }
local Model = P.Model

local floor, max = math.floor, math.max
local format = string.format
local copy, is_null = B.copy, B.is_null

-- The keys every model knows (key -> owner): a tsk_ key is the same account as its plain name.
P.DEFAULT_KEYS = {
  ["test-key"] = "test-key", ["tsk_test-key"] = "test-key",
  ["other-key"] = "other-key", ["tsk_other-key"] = "other-key",
}

-- The providers /_fake/stats counts creates of: "tripo" (V3), "tripo-v2", "sellerpic".
P.CREATE_APIS = { "tripo", "tripo-v2", "sellerpic" }

-- keys option -> {key = owner}: the defaults plus a list of keys, a set {key = true} or a
-- map {key = "owner"} (an owner is the account a key belongs to; true: the key itself).
function P.key_owners(extra)
  local keys = {}
  for k, v in pairs(P.DEFAULT_KEYS) do keys[k] = v end
  if type(extra) == "string" then extra = { extra } end
  if type(extra) == "table" then
    for k, v in pairs(extra) do
      if type(k) == "number" then
        if type(v) == "string" and v ~= "" then keys[v] = keys[v] or v end
      elseif type(k) == "string" and k ~= "" and v then
        keys[k] = type(v) == "string" and v or k
      end
    end
  end
  return keys
end

-- The options of taskapi.fake.model.new (documented there).
function Model:init(opts)
  self.clock = opts.clock or os.time
  self.files_dir = opts.files_dir
  self.base_url = (opts.base_url or "http://fake.invalid"):gsub("/+$", "")
  self.keys = P.key_owners(opts.keys)
  self.link_ttl = opts.link_ttl or 300
  self.balance = opts.balance or 3000
  self.v3_balance = opts.balance or 2987.5
  self.sellerpic_total = opts.sellerpic_total or 1000
  self.v3_statuses = tonumber(opts.v3_statuses) == 8 and 8 or 5
  self.v3_eta = opts.v3_eta ~= false
  self.list_shape = opts.list_shape == "map" and "map" or "array"
  self.credits = tonumber(opts.credits) or 12.5
  self.presign_ttl = tonumber(opts.presign_ttl) or 900
  self.log = {}
  self:reset()
  return self
end

--- Adds an API key (owner: the account it belongs to; the key itself when nil).
function Model:add_key(key, owner)
  if type(key) ~= "string" or key == "" then return nil, "a key must be a non-empty string" end
  self.keys[key] = type(owner) == "string" and owner or key
  return true
end

-- The account of an API key or an owner_key value (a key not known: itself).
function Model:owner_of(key)
  if key == nil then return nil end
  return self.keys[key] or key
end

--- Forgets every task, link and log entry (the log table is emptied in place); keeps files on disk.
function Model:reset()
  self.tasks = {}
  self.results = {} -- SellerPic result id -> {task=, index=}
  self.links = {}   -- token -> {task_id=, key=, filename=, expires=}
  self.offset = 0
  self.counter = 0
  self.trace_counter = 0
  self.sellerpic_used = 0
  self.file_tokens = {} -- V3 file_token -> {owner=, format=, ready=, size=, adler32=}
  self.presigned = {}   -- upload id of a presigned upload_url -> {token=, expires=, name=}
  self.storage_faults = { presign = {}, put = {}, down = 0, sign = 0 } -- set_storage_faults
  self.stats = { creates = {}, created = {} }
  self.request_faults = {} -- scripted failures of the next creates or uploads (POST /_fake/faults)
  for _, api in ipairs(P.CREATE_APIS) do self.stats.creates[api], self.stats.created[api] = 0, 0 end
  for i = #self.log, 1, -1 do self.log[i] = nil end
end

-- The next number of the model's one counter (ids, tokens, links).
function Model:next_count()
  self.counter = self.counter + 1
  return self.counter
end

function Model:trace_id()
  self.trace_counter = self.trace_counter + 1
  return format("fake-trace-%08x%08x", floor(self:now()) % 4294967296, self.trace_counter)
end

--- Adds a scripted task (the same as POST /_fake/tasks). Returns its id (a string) or nil, err.
--- spec: provider ("tripo" | "sellerpic"; "tripo"; "tripo-v2" and "tripo-v3" mean "tripo":
--- one Tripo task reads through both APIs), id, owner_key ("test-key"), type,
--- queue (seconds queued; 1), run (seconds running; 2), final, error_code, error_message
--- (the message of a failed task: V3 error_message, SellerPic errorMsg), status_value,
--- outputs (Tripo names, or {name = ext}; default by type, see TRIPO_KIND), multiview,
--- riggable (true) and rig_type ("biped") of a rig check, credits (V3 credits_consumed),
--- v3_statuses (5 | 8), v3_eta (bool), results (SellerPic count; 1),
--- result_states, file_size (2048), content_type, numeric_ids, eta_noise, input,
--- faults = {...} (names in M.FAULTS; they may also sit at the spec's top level).
function Model:add_task(spec)
  if type(spec) ~= "table" then return nil, "a task spec must be a table" end
  local provider = spec.provider or "tripo"
  if provider == "tripo-v2" or provider == "tripo-v3" then provider = "tripo" end
  local kind = self.TASK_KINDS[provider]
  if not kind then
    return nil, "unknown provider '" .. tostring(provider) .. "'"
  end
  local n = self:next_count()
  local id
  if not is_null(spec.id) then
    id = type(spec.id) == "number" and format("%.0f", spec.id) or tostring(spec.id)
    if math.type and math.type(spec.id) == "integer" then id = format("%d", spec.id) end
  else
    id = kind.new_id(n)
  end
  if id == "" or id:find("[/%s?#]") then return nil, "a task id must not be empty nor hold / ? # or spaces" end
  if self.tasks[id] then return nil, "task " .. id .. " already exists" end
  local function num(v, default)
    v = tonumber(v)
    if v == nil then return default end
    return v
  end
  local t = {
    id = id,
    provider = provider,
    owner_key = (not is_null(spec.owner_key)) and tostring(spec.owner_key) or "test-key",
    seq = n,
    queue = max(0, num(spec.queue, 1)),
    run = max(0, num(spec.run, 2)),
    created = self:now(),
    file_size = floor(max(0, num(spec.file_size, 2048))),
    content_type = (not is_null(spec.content_type)) and spec.content_type or nil,
    status_value = (not is_null(spec.status_value)) and tostring(spec.status_value) or nil,
    error_code = (not is_null(spec.error_code)) and spec.error_code or nil,
    -- [error_message] a failed task's message (V3 error_message, SellerPic errorMsg) instead of the default
    error_message = type(spec.error_message) == "string" and spec.error_message or nil,
    -- [/error_message]
    eta_noise = floor(num(spec.eta_noise, 0)),
    numeric_ids = spec.numeric_ids == true,
    input = type(spec.input) == "table" and copy(spec.input) or {},
    spec = copy(spec),
    polls = 0,
    files = {},       -- key -> {key=, filename=, content_type=, size=, seed=}
    first_get = {},   -- key -> true once the file host served one GET of it
    stalls = 0,
    faults = faults.of_spec(spec),
  }
  t.owner = self:owner_of(t.owner_key)
  local err = kind.fill(self, t, spec, num)
  if err then return nil, err end
  self.tasks[id] = t
  return id
end

--- The internal record of a task (for specs and debugging).
function Model:task(id)
  return self.tasks[tostring(id)]
end

-- Task id if it is a task of provider that belongs to the account of the request's key, else nil.
function Model:own_task(ctx, id, provider)
  local t = self.tasks[id]
  if not t or t.provider ~= provider or t.owner ~= ctx.owner then return nil end
  return t
end

-- The task spec a create's body makes: its `fake` field scripts the task, the rest is the
-- task's input; the key that created it owns it.
function P.create_spec(body, provider, typ, key)
  local spec = type(body.fake) == "table" and copy(body.fake) or {}
  spec.provider = provider
  spec.type = typ
  if is_null(spec.owner_key) then spec.owner_key = key end
  local input = {}
  for k, v in pairs(body) do if k ~= "fake" then input[k] = v end end
  spec.input = input
  return spec
end

-- Counts a request that can create a task (for /_fake/stats and the log's `create` entry).
function Model:count_create(ctx, api)
  self.stats.creates[api] = (self.stats.creates[api] or 0) + 1
  if ctx.log then ctx.log.create = { provider = api } end
end

function Model:created(ctx, api, id)
  self.stats.created[api] = (self.stats.created[api] or 0) + 1
  if ctx.log and ctx.log.create then ctx.log.create.task_id = id end
end

--- Counts of requests that could create a task, per provider ("tripo" is V3, "tripo-v2",
--- "sellerpic"): creates = every such request, created = those that made a task.
function Model:get_stats()
  local st = { creates = {}, created = {} }
  for k, v in pairs(self.stats.creates) do st.creates[k] = v end
  for k, v in pairs(self.stats.created) do st.created[k] = v end
  return st
end

-- The log entry of a request (m.log, GET /_fake/log): method, path, query, headers (no
-- authorization), time, authorization (bool), key, connection; the parts that answer it add
-- upload, create, fault and ids (the tasks a list read answered).
function Model:log_request(ctx, has_auth, connection)
  local logged = {}
  for k, v in pairs(ctx.headers) do if k ~= "authorization" then logged[k] = v end end
  ctx.log = {
    method = ctx.method, path = ctx.path, query = copy(ctx.query), headers = logged, time = ctx.now,
    authorization = has_auth, key = ctx.key, connection = connection,
  }
  self.log[#self.log + 1] = ctx.log
end

-- GET /_fake/log: the log as a JSON array.
function Model:log_json()
  local out = json.array({})
  for i, e in ipairs(self.log) do
    out[i] = { method = e.method, path = e.path, query = e.query, headers = e.headers, time = e.time,
      authorization = e.authorization, key = e.key, upload = e.upload, create = e.create,
      connection = e.connection, fault = e.fault, ids = e.ids }
  end
  return out
end

return P
