-- taskapi.client: the client object of the public contract. It checks every argument before
-- any request and delegates: provider.lua (ids, responses, tasks), http.lua (calls and
-- retries), download.lua (files), wait.lua (polling). The API key lives in a private table,
-- out of reach of printing or iterating the client.
local core = require "taskapi.core"
local errors = require "taskapi.errors"
local provider = require "taskapi.api.provider"
local http = require "taskapi.api.http"
local download = require "taskapi.ops.download"
local secret = require "taskapi.api.secret"
local scheduler = require "taskapi.run.scheduler"
local waiting = require "taskapi.ops.wait"
local upload = require "taskapi.ops.upload"
local check = require "taskapi.api.check"

local M = {}
local Client = {}
Client.__index = Client
M.Client = Client

function Client.__tostring(c)
  return "taskapi client (" .. c.def.name .. ", " .. c.base_url .. ")"
end

-- The options of taskapi.new and their rules (taskapi.api.check; `true`: checked in M.new).
local SECONDS_UP_TO_A_DAY = { "number", above = 0, max = 86400, unit = "seconds" }
local RULES = {
  provider = true, api_key = true, base_url = true, region = true, transport = true, ca_file = true,
  user_agent = true, ledger = true,
  timeout = SECONDS_UP_TO_A_DAY, backoff = SECONDS_UP_TO_A_DAY, max_backoff = SECONDS_UP_TO_A_DAY,
  max_retry_after = SECONDS_UP_TO_A_DAY, stall_time = SECONDS_UP_TO_A_DAY,
  retries = { "number", integer = true, min = 0, max = 20 },
  min_interval = check.NON_NEGATIVE_SECONDS, max_body = check.POSITIVE, insecure = check.BOOLEAN,
}

local warned_insecure = false

--- taskapi.new(opts): see the README for every option.
function M.new(opts)
  if type(opts) ~= "table" then return errors.invalid("taskapi.new expects an options table, got " .. type(opts)) end
  local ok, err = check.known(opts, RULES, "")
  if not ok then return nil, err end
  local def
  def, err = provider.load(opts.provider)
  if not def then return nil, err end
  local key = opts.api_key
  -- newuser: no api_key: the provider's own variable (TRIPO_API_KEY, SELLERPIC_API_KEY), as the CLI
  if key == nil and type(def.key_env) == "string" then
    key = os.getenv(def.key_env)
    if key == "" then key = nil end
  end
  if key == nil then
    return errors.invalid("option 'api_key' is required" ..
      (type(def.key_env) == "string" and " (or set " .. def.key_env .. ")" or ""))
  end
  if type(key) ~= "string" or key == "" then return errors.invalid("option 'api_key' must be a non-empty string") end
  if key:find("[%c%s]") then return errors.invalid("option 'api_key' contains white space or control characters") end
  if #key > 4096 then return errors.invalid("option 'api_key' is " .. #key .. " bytes long (at most 4096)") end
  local base = opts.base_url or def.base_url
  if opts.region ~= nil then
    local r = def.regions and type(opts.region) == "string" and def.regions[opts.region:lower()]
    if not r then
      local names = {}
      for k in pairs(def.regions or {}) do names[#names + 1] = k end
      table.sort(names)
      return errors.invalid("option 'region' must be " .. (#names > 0 and "one of " .. table.concat(names, ", ") or
        "absent: " .. def.name .. " has no regions") .. ", got " ..
        (type(opts.region) == "string" and "'" .. opts.region:sub(1, 40) .. "'" or type(opts.region)))
    end
    if opts.base_url == nil then base = r end
  end
  if type(base) ~= "string" or #base > 2048 or not base:match("^https?://[^%s/?#]+[^%s?#]*$") then
    return errors.invalid("option 'base_url' must be an http(s) URL without query, got " ..
      (type(base) == "string" and "'" .. base:sub(1, 80) .. "'" or type(base)))
  end
  local c = setmetatable({ def = def, base_url = (base:gsub("/+$", "")) }, Client)
  c.timeout, c.retries, c.backoff, c.max_backoff, c.max_retry_after = 30, 3, 0.5, 30, 120
  c.min_interval = def.min_interval or 0
  ok, err = check.options(opts, RULES, "", c)
  if not ok then return nil, err end
  if opts.ca_file ~= nil then
    local f = type(opts.ca_file) == "string" and not opts.ca_file:find("%z") and io.open(opts.ca_file, "rb")
    local readable = f and f:read(0) ~= nil -- a folder opens but does not read
    if f then f:close() end
    if not readable then return errors.invalid("option 'ca_file' must name a readable file") end
    c.ca_file = opts.ca_file
  end
  if c.insecure and not warned_insecure then
    warned_insecure = true
    io.stderr:write("taskapi: warning: TLS verification is off (insecure = true)\n")
  end
  if opts.ledger ~= nil then -- ledger: an observer of creates, states and files (taskapi.ledger)
    c.ledger, err = require("taskapi.ledger").attach(opts.ledger)
    if not c.ledger then return nil, err end
    c.own_ledger = type(opts.ledger) == "string"
  end
  if opts.transport ~= nil then
    if type(opts.transport) ~= "table" or type(opts.transport.request) ~= "function" then
      return errors.invalid("option 'transport' must be a table with a request method")
    end
    c.transport = opts.transport
  else
    c.multi = core.multi()
  end
  if opts.user_agent ~= nil then
    if type(opts.user_agent) ~= "string" or opts.user_agent:find("%c") or #opts.user_agent > 256 then
      return errors.invalid("option 'user_agent' must be a string of at most 256 bytes without control characters")
    end
    c.user_agent = opts.user_agent .. " taskapi/" .. core.version
  else
    c.user_agent = "taskapi/" .. core.version .. " (" .. (_VERSION or "Lua") .. (jit and "; " .. jit.version or "") .. ")"
  end
  secret.set(c, key)
  return c
end

function Client:status(id)
  local sid, err = provider.check_id(self.def, id)
  if not sid then return nil, err end
  return self:_status(sid)
end

-- One status read of a checked id; retries overrides the client's retry count, timeout
-- caps the client's (the time a wait has left).
function Client:_status(sid, retries, timeout)
  local data, trace = http.call(self, "GET", self.def.status_path, sid, nil, sid, retries, nil, timeout)
  if not data then return nil, trace end
  local task, err = provider.task(self.def, data, sid, trace, core.null)
  if task and self.ledger then self.ledger:task_seen(task) end -- ledger: a change of state
  return task, err
end

-- Batch reads -------------------------------------------------------------------------------
-- def.batch = {path=, max=, field=, read=function(data, null) -> by_id, missed}: many tasks
-- in one POST {[field] = {ids...}}. A client that got 404, 405 or 501 from it (no such
-- endpoint), or 400 or 422 (an endpoint that does not take the request as sent: each task's
-- own GET then says which id is at fault, if one is), remembers that it cannot batch, and
-- reads one task per request from then on.
local NO_ENDPOINT = { [400] = true, [404] = true, [405] = true, [422] = true, [501] = true }

-- The client's batch read (def.batch), or nil when its provider has none or it proved missing.
function Client:_batch()
  if self.no_batch then return nil end
  return self.def.batch
end

--- One batch read of checked ids (at most def.batch.max); retries as in _status. Returns
--- tasks_by_id, errs_by_id (every id in one of them: an id the answer says it missed ends as
--- not_found, one it left out as a retryable bad_response), or nil, err when the whole
--- request failed. timeout: as in _status.
function Client:_status_many(sids, retries, timeout)
  local def = self.def
  local b = def.batch
  -- checked ids (URL-safe characters) and a plain field name need no JSON escaping: the
  -- body is joined as it is, without json.encode
  local body = { [b.field] = sids }
  if type(b.field) == "string" and b.field:match("^[%w_]+$") then
    body = '{"' .. b.field .. '":["' .. table.concat(sids, '","') .. '"]}'
  end
  local data, trace = http.call(self, "POST", b.path, nil, body, nil, retries, nil, timeout)
  if not data then
    if trace.status and NO_ENDPOINT[trace.status] then self.no_batch = true end
    return nil, trace
  end
  local by, missed = b.read(data, core.null)
  local tasks, errs = {}, {}
  local gone = {}
  for i = 1, #(missed or {}) do gone[missed[i]] = true end
  for i = 1, #sids do
    local sid = sids[i]
    local payload = by[sid]
    if payload ~= nil then
      local t, e = provider.task(def, payload, sid, trace, core.null)
      if t then tasks[sid] = t else errs[sid] = e end
      if t and self.ledger then self.ledger:task_seen(t) end -- ledger: a change of state
    elseif gone[sid] then
      errs[sid] = errors.new("not_found", def.name .. ": task not found (the batch read missed it)",
        { task_id = sid, trace_id = trace })
    else
      errs[sid] = errors.new("bad_response", def.name .. ": the batch read's answer left the task out",
        { task_id = sid, trace_id = trace, retryable = true })
    end
  end
  return tasks, errs
end

local function is_task(v, def)
  return type(v) == "table" and type(v.id) == "string" and type(v.outputs) == "table" and v.provider == def.name
end

function Client:download(task_or_id, opts)
  local o, err = download.check_opts(self.def, opts)
  if not o then return nil, err end
  local task = task_or_id
  if not is_task(task, self.def) then
    if type(task) == "table" then
      return errors.invalid("download expects a " .. self.def.name .. " task (from status or wait) or a task id")
    end
    task, err = self:status(task_or_id)
    if not task then return nil, err end
  end
  local files, derr = download.run(self, task, o)
  if self.ledger then -- ledger: files saved (not those skipped because a file was there: files branch)
    local saved = {}
    for _, f in ipairs(files or derr.files or {}) do
      if not f.skipped then saved[#saved + 1] = f end
    end
    self.ledger:files_saved(task, saved)
  end
  return files, derr
end

-- The create request; returns the id or nil, err (err.indeterminate: the task may exist).
local function send_create(self, def, path, t, body)
  local data, err = http.call(self, "POST", path, { type = t }, body, nil, nil, true)
  if not data then return nil, err end
  local id = data[def.create_result]
  if type(id) == "number" then id = string.format("%d", id) end
  if type(id) ~= "string" or id == "" then
    -- the server said yes without saying to what: the task may exist
    return nil, http.indeterminate(self, errors.new("bad_response", def.name .. ": create answered without '" ..
      def.create_result .. "'"))
  end
  return id
end

--- Starts a task; returns its id as a string. params.type names the task type; the rest is
--- the body. Tripo V3: the type picks the capability's endpoint (V2 names such as
--- "text_to_model" or V3 names such as "text-to-model"), the body goes without `type`. Tripo V2:
--- the body carries `type`. SellerPic: the type picks the endpoint.
function Client:create(params, opts)
  if type(params) ~= "table" then return errors.invalid("create expects a table of parameters, got " .. type(params)) end
  local any_type = false
  if opts ~= nil then
    if type(opts) ~= "table" then return errors.invalid("create: options must be a table, got " .. type(opts)) end
    for k, v in pairs(opts) do
      if k ~= "any_type" then return errors.invalid("create: unknown option '" .. tostring(k):sub(1, 40) .. "'") end
      if type(v) ~= "boolean" then return errors.invalid("create: option 'any_type' must be a boolean") end
    end
    any_type = opts.any_type == true
  end
  local def = self.def
  if not def.create_path and not def.create_types then return errors.invalid(def.name .. ": this provider has no create") end
  local t = params.type
  if t == nil then return errors.invalid("create: parameter 'type' (the task type) is required") end
  if type(t) ~= "string" or t == "" then
    return errors.invalid("create: parameter 'type' must be a non-empty string, got " .. (t == "" and "an empty string" or type(t)))
  end
  if #t > 64 then return errors.invalid("create: task type of " .. #t .. " bytes (at most 64)") end
  -- a type that goes into the URL is one path segment; one that is looked up may name its group
  if not t:match(def.create_types and "^[%w_%-/]+$" or "^[%w_%-]+$") then
    return errors.invalid("create: task type '" .. t:sub(1, 40) .. "' has characters other than letters, digits, _ and -")
  end
  for k in pairs(params) do
    if type(k) ~= "string" then return errors.invalid("create: parameter names must be strings, got a " .. type(k)) end
  end
  local path, body = def.create_path, params
  -- A type the definition does not know is refused, unless the caller says it is newer than
  -- the library (any_type): then Tripo V3 needs it as the endpoint's "group/name".
  local known = def.create_types and (def.create_types[t] or def.create_types[t:lower()])
  if def.create_types and not known and any_type and t:match("^[%w_%-]+/[%w_%-]+$") then known = "/" .. t end
  if not known and def.create_known and (def.create_known[t] or any_type) then known = true end
  if not known and (def.create_types or def.create_known) then
    return errors.invalid("create: unknown " .. def.name .. " task type '" .. t:sub(1, 40) .. "' (known: " ..
      table.concat(def.create_names or {}, ", ") ..
      (def.create_types and "; or the endpoint's name, such as text-to-model" or "") ..
      "; for a type newer than this library: create(params, { any_type = true })" ..
      (def.create_types and " with the endpoint as the type, e.g. 'generation/new-thing'" or "") .. ")")
  end
  if def.create_types then
    path = known
    local need = def.create_required and def.create_required[path]
    if need then
      local found = false
      for _, field in ipairs(need[1]) do if params[field] ~= nil then found = true end end
      if not found then
        return errors.invalid("create: " .. def.name .. " " .. path:match("([^/]+)$") .. " needs '" .. need[1][1] ..
          "' (or '" .. table.concat(need[1], "' or '", 2) .. "'), for example " .. need[1][1] .. " = \"" .. need[2] .. "\"")
      end
    end
  end
  if def.create_types or path:find("{type}", 1, true) then
    body = {}
    for k, v in pairs(params) do if k ~= "type" then body[k] = v end end
  end
  -- ledger: the intent is committed before the request (no record, no request), its outcome after
  local rid, lerr
  if self.ledger then
    rid, lerr = self.ledger:before_create(def.name, t, path, params)
    if not rid then return nil, lerr end
  end
  local id, err = send_create(self, def, path, t, body)
  if rid then self.ledger:after_create(rid, def.name, t, id, err) end
  return id, err
end

--- Uploads a local file of a type the provider takes, streamed from the file: a path or
--- {path=, type=?, filename=?}. Multipart up to the definition's upload_max_bytes; above it,
--- when the definition has a presign_path, a presigned PUT to the storage host (upload.lua).
--- Returns the provider's reference to it as a string: Tripo's file_token (V3) or image_token
--- (V2), SellerPic's fileKey. The file is checked before any request.
function Client:upload(path_or_opts)
  local parts, size, info = upload.parts(self.def, path_or_opts)
  if not parts then return nil, size end -- size is the error here
  local def = self.def
  if upload.is_presigned(def, size) then return upload.presigned(self, info) end
  local data, uerr = http.upload(self, def.upload_path, parts)
  if not data then return nil, uerr end
  local ref = data[def.upload_result]
  if type(ref) ~= "string" or ref == "" then
    return nil, errors.new("bad_response", def.name .. ": upload answered without '" .. def.upload_result .. "'")
  end
  return ref
end

--- The account's credits: Tripo {balance=, frozen=} (V3 sends decimals); SellerPic
--- {remaining=, total=, usage=}. Numbers sent as decimal strings come back as numbers.
function Client:balance()
  if not self.def.balance_path then return errors.invalid(self.def.name .. ": this provider has no balance") end
  local data, err = http.call(self, "GET", self.def.balance_path)
  if not data then return nil, err end
  for k, v in pairs(data) do
    if type(v) == "string" and v:match("^%-?%d+%.?%d*$") then data[k] = tonumber(v) end
  end
  return data
end

--- Tripo V3 account usage: one page of rows {task_id=, type=, status=, created_at= (Unix
--- seconds), credits=, raw=}, newest first. opts: limit (1..200; 50), offset (>= 0; 0).
--- The only way to find a task whose id the create never returned.
function Client:usage(opts)
  local def = self.def
  if not def.usage_path then return errors.invalid(def.name .. ": this provider has no usage listing") end
  if opts ~= nil and type(opts) ~= "table" then return errors.invalid("usage expects an options table, got " .. type(opts)) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "limit" and k ~= "offset" then return errors.invalid("usage: unknown option '" .. tostring(k):sub(1, 40) .. "'") end
  end
  local limit, offset = opts.limit or 50, opts.offset or 0
  if type(limit) ~= "number" or limit % 1 ~= 0 or limit < 1 or limit > def.usage_max then
    return errors.invalid("usage: 'limit' must be a whole number from 1 to " .. def.usage_max)
  end
  if type(offset) ~= "number" or offset % 1 ~= 0 or offset < 0 or offset >= 2 ^ 31 then
    return errors.invalid("usage: 'offset' must be a whole number >= 0")
  end
  local data, err = http.call(self, "GET", def.usage_path,
    { limit = string.format("%d", limit), offset = string.format("%d", offset) })
  if not data then return nil, err end
  local list = data
  if type(data.items) == "table" then list = data.items
  elseif type(data.rows) == "table" then list = data.rows
  elseif type(data.list) == "table" then list = data.list
  elseif type(data.usage) == "table" then list = data.usage end
  local rows = {}
  for _, r in ipairs(list) do
    if type(r) == "table" then
      local id = r.task_id
      if type(id) == "number" then id = string.format("%d", id) end
      rows[#rows + 1] = {
        task_id = type(id) == "string" and id or nil, type = type(r.type) == "string" and r.type or nil,
        status = type(r.status) == "string" and r.status or nil, created_at = provider.time_of(r.created_at),
        credits = provider.number_of(r.credits_consumed or r.credits), raw = r,
      }
    end
  end
  return rows
end

function Client:wait(id, opts)
  return waiting.wait(self, id, opts)
end

-- Checks an array of ids before any request; returns the array of id strings.
local function check_ids(def, ids)
  if type(ids) ~= "table" then return errors.invalid("expected an array of task ids, got " .. type(ids)) end
  local out, seen = {}, {}
  for i = 1, #ids do
    local sid, err = provider.check_id(def, ids[i])
    if not sid then
      err.message = "id #" .. i .. ": " .. err.message
      return nil, err
    end
    if not seen[sid] then
      seen[sid] = true
      out[#out + 1] = sid
    end
  end
  return out
end

--- One read of many tasks: batch requests of up to def.batch.max ids where the provider has
--- them, one status request per id where it has none. Returns two tables keyed by task id:
--- the tasks, and the errors of those not read (a failed request's error under each of its
--- ids, err.task_id set). Bad ids: nil, err before any request.
function Client:status_many(ids)
  local list, err = check_ids(self.def, ids)
  if not list then return nil, err end
  local tasks, errs = {}, {}
  local i = 1
  while i <= #list do
    local b = self:_batch()
    if not b then
      local sid = list[i]
      tasks[sid], errs[sid] = self:_status(sid)
      i = i + 1
    else
      local chunk = {}
      for j = i, math.min(i + b.max - 1, #list) do chunk[#chunk + 1] = list[j] end
      local t, e = self:_status_many(chunk)
      if t then
        for sid, task in pairs(t) do tasks[sid] = task end
        for sid, x in pairs(e) do errs[sid] = x end
        i = i + #chunk
      elseif self:_batch() then
        for _, sid in ipairs(chunk) do
          local x = errors.new(e.kind, e.message, e)
          x.task_id = sid
          errs[sid] = x
        end
        i = i + #chunk
      end -- else: no batch endpoint after all; the same ids again, one request each
    end
  end
  return tasks, errs
end

--- Waits for many tasks at once (coroutines on one multi handle); returns two tables keyed
--- by task id: the finalized tasks, and the errors of those whose waiting failed.
function Client:wait_all(ids, opts)
  local list, err = check_ids(self.def, ids)
  if not list then return nil, err end
  local p, perr = waiting.check_opts(self, opts)
  if not p then return nil, perr end
  local tasks, errs = {}, {}
  local function body()
    waiting.wait_many(self, scheduler.current(), list, p, function(sid, t, e)
      if t then tasks[sid] = t else errs[sid] = e end
    end)
  end
  if scheduler.current() then body() else scheduler.run(body) end
  return tasks, errs
end

--- An iterator over tasks as each one finishes: `for task, err in client:each_completed(ids)`.
--- On a failed wait, task is the last task seen (or a stub with the id and state "unknown")
--- and err says why (err.task_id names the task), so the loop goes on to the next one.
function Client:each_completed(ids, opts)
  local list, err = check_ids(self.def, ids)
  if not list then
    local given = false
    return function() if given then return nil end given = true return { ok = false, done = false }, err end
  end
  local p, perr = waiting.check_opts(self, opts)
  if not p then
    local given = false
    return function() if given then return nil end given = true return { ok = false, done = false }, perr end
  end
  local s = scheduler.current()
  local own = s == nil
  if own then s = scheduler.new() end
  local queue, head, tail = {}, 1, 0
  local ready = s:event()
  local remaining = #list
  local name = self.def.name
  -- an error raised while waiting (an on_progress of the caller's) ends the loop: the
  -- iterator raises it (once; the waits still running were cancelled by wait_many)
  local failed, raised = false, nil
  s:spawn(function()
    local ok, werr = pcall(waiting.wait_many, self, s, list, p, function(sid, t, e)
      if not t then
        e.task_id = e.task_id or sid
        t = e.task or { id = sid, provider = name, state = "unknown", done = false, ok = false, outputs = {} }
      end
      tail = tail + 1
      queue[tail] = { t, e }
      ready.signal()
    end)
    if not ok then
      failed, raised = true, werr
      ready.signal()
    end
  end)
  return function()
    if remaining == 0 then
      if own then s.multi:close() end
      return nil
    end
    if head > tail and not failed then
      if own then
        s:loop(function() return head <= tail or failed end)
      else
        while head > tail and not failed do ready.wait() end
      end
    end
    if head > tail then
      remaining = 0
      if own then s.multi:close() end
      if failed then error(raised, 0) end
      return nil
    end
    local item = queue[head]
    queue[head] = nil
    head, remaining = head + 1, remaining - 1
    return item[1], item[2]
  end
end

--- With a ledger: waits for its unfinished tasks and saves the results not yet saved (see
--- taskapi.ledger.resume for the options); returns tasks, errs like wait_all, and files.
function Client:resume(opts)
  return require("taskapi.ledger").resume(self, opts)
end

--- With a ledger: finds the tasks of indeterminate creates where the provider lists them
--- (Tripo V3 usage); returns {found=, left=} (see taskapi.ledger.reconcile).
function Client:reconcile(opts)
  return require("taskapi.ledger").reconcile(self, opts)
end

--- One worker of a fleet sharing a ledger on Redis: polls, downloads and sweeps the tasks of
--- the client's provider with the other workers (see taskapi.ops.serve for the options);
--- returns the worker's counts once it stops.
function Client:serve(ledger, opts)
  return require("taskapi.ops.serve").serve(self, ledger, opts)
end

function Client:close()
  if self.multi then self.multi:close() end
  if self.own_ledger and self.ledger then self.ledger:close() end
end

return M
