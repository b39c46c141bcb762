-- taskapi.ledger: every task the user paid for, in a store several processes share.
--
--   taskapi.ledger.open(path_or_url [, opts]) -> ledger | nil, err
--     "redis://HOST:PORT/DB?prefix=NAME"  the Redis store (taskapi.ledger.redis)
--     anything else                      a SQLite file (taskapi.ledger.sqlite)
--
-- Both stores keep the same records and answer the same queries in the same order. A
-- client made with `ledger = L` (or a path or URL) calls four observer methods, each one
-- atomic write (a SQLite transaction, a Redis script):
--
--   L:before_create(provider, type, endpoint, params) -> rid   the intent, before the POST
--   L:after_create(rid, provider, type, id, err)               its outcome: created (and the
--                                                              task, pending), refused, or
--                                                              indeterminate
--   L:task_seen(task)                                          a change of state; a finalized
--                                                              task's compact record
--   L:files_saved(task, files)                                 each file saved
--
-- Reading: L:tasks{pending=, provider=, state=}, L:get(id [, provider]), L:intents{...},
-- L:files(id [, provider]), L:ids(provider), L:events{provider=, task_id=}. M.resume(client,
-- opts) and M.reconcile(client, opts) are client:resume and client:reconcile.
--
-- This module holds what the stores share: the observer and the reading methods (M.Ledger,
-- the class each store's class inherits), digests and request ids, the compact task, the
-- file checks, resume and reconcile. A store gives these primitives (rows are tables keyed
-- by the SQLite ledger's column names; a missing value is an absent field):
--   S:_intent(rid, provider, type, endpoint, digest, at)        -> true | nil, err
--   S:_outcome(rid, provider, type, id, outcome, message, at)   -> true | nil, err
--   S:_task(task, compact_json, at) -> true | nil, err  (writes and adds an event only when
--                                      the state, done or the compact record changed)
--   S:_file(task, name, path, bytes, sha256, mtime, adopted, at) -> true | nil, err
--   S:_task_rows(provider_or_nil) -> rows (oldest first: first_at, then insertion), file rows
--                                    of each (an array of arrays) | nil, err
--   S:_task_row(id, provider_or_nil) -> row, file rows | nil | nil, err
--   S:_intent_rows() -> rows (oldest first: at, then insertion) | nil, err
--   S:_reconciled(rid, provider, id, type, at) -> true | false (the task is there) | nil, err
--   S:_event_rows() -> every event, in order | nil, err
--   S:files(id, provider), S:ids(provider)
-- and S.db (the connection, with a close method; nil once closed) and S.path (what it was
-- opened with).
local core = require "taskapi.core"
local errors = require "taskapi.errors"
local json = require "taskapi.json"

local M = {}

M.SCHEMA = 1
M.BUSY_TIMEOUT = 5 -- seconds a SQLite writer waits for another process's transaction

local Ledger = {}
Ledger.__index = Ledger
M.Ledger = Ledger

function Ledger.__tostring(L)
  return "taskapi ledger (" .. L.path .. ")"
end

--- A store's class: inherits Ledger's methods, prints like it.
function M.class()
  local cls = setmetatable({}, { __index = Ledger })
  cls.__index = cls
  cls.__tostring = Ledger.__tostring
  return cls
end

--- Closes the store (idempotent).
function Ledger:close()
  if self.db then self.db:close() end
  self.db = nil
  return true
end

local classes = {}

--- Is v a ledger of one of the stores?
function M.is_ledger(v)
  local mt = getmetatable(v)
  return mt ~= nil and classes[mt] == true
end

function M.register(cls) classes[cls] = true end

local function now() return os.time() end
M.now = now

--- An error of the store while doing `what`: "ledger: what: ..." (a store's error table keeps
--- its kind: transport for a Redis that is not there; anything else is io). who: the word
--- before `what` ("ledger"; the fleet's queues say "fleet").
function M.db_err(err, what, who)
  who = who or "ledger"
  if type(err) == "table" then
    err = errors.adopt(err)
    err.message = who .. ": " .. what .. ": " .. tostring(err.message)
    return err
  end
  return errors.new("io", who .. ": " .. what .. ": " .. tostring(err))
end
local db_err = M.db_err

local function closed(what)
  return nil, errors.new("io", "ledger: " .. what .. ": the ledger is closed")
end
M.closed = closed

--- taskapi.ledger.open(path_or_url [, opts]) -> ledger | nil, err. A redis:// URL opens the
--- Redis store (opts: see taskapi.ledger.redis), anything else a SQLite file (opts:
--- busy_timeout, synchronous; see taskapi.ledger.sqlite).
function M.open(path, opts)
  if type(path) ~= "string" or path == "" or path:find("%z") then
    return errors.invalid("ledger: the path must be a non-empty string without NUL bytes")
  end
  if opts ~= nil and type(opts) ~= "table" then return errors.invalid("ledger: options must be a table") end
  local store = path:match("^redis://") and "taskapi.ledger.redis" or "taskapi.ledger.sqlite"
  return require(store).open(path, opts or {})
end

--- A ledger from taskapi.new's `ledger` option: a ledger (kept as is) or a path or URL (opened).
function M.attach(v)
  if type(v) == "string" then return M.open(v) end
  if M.is_ledger(v) then
    if not v.db then return errors.invalid("option 'ledger': the ledger is closed") end
    return v
  end
  return errors.invalid("option 'ledger' must be a ledger (taskapi.ledger.open), a path or a redis:// URL, got " .. type(v))
end

--- Checks an options table against the names a store knows.
function M.check_keys(what, t, known)
  for k in pairs(t) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      return errors.invalid(what .. ": unknown option '" .. tostring(k):sub(1, 40) .. "' (known: " ..
        table.concat(names, ", ") .. ")")
    end
  end
  return true
end

----------------------------------------------------------------------------------------------
-- digests and ids

-- FNV-1a (32 bits) of s from offset basis h, without bit operators (LuaJIT parses no `~`):
-- XOR of the low byte by table, multiplication by 16777619 = 2^24 + 403 split so that no
-- product passes 2^53.
local XOR8
local function xor8(a, b)
  if not XOR8 then
    XOR8 = {}
    for x = 0, 255 do
      local row = {}
      for y = 0, 255 do
        local r, bit, xx, yy = 0, 1, x, y
        for _ = 1, 8 do
          if xx % 2 ~= yy % 2 then r = r + bit end
          xx, yy, bit = math.floor(xx / 2), math.floor(yy / 2), bit * 2
        end
        row[y] = r
      end
      XOR8[x] = row
    end
  end
  return XOR8[a][b]
end

local function fnv1a32(s, h)
  for i = 1, #s do
    local low = h % 256
    h = h - low + xor8(low, s:byte(i))
    h = ((h % 256) * 16777216 + h * 403) % 4294967296
  end
  return h
end

--- The digest of a create's parameters (their JSON, keys sorted): "sha256:<hex>" when
--- taskapi.core has sha256, else "fnv1a:<two FNV-1a 32-bit hashes>" (not cryptographic: it
--- tells parameter sets apart, it proves nothing).
function M.digest(params)
  local text, err = json.encode(params)
  if not text then return nil, err end
  if core.sha256 then return "sha256:" .. core.sha256(text) end
  return string.format("fnv1a:%08x%08x", fnv1a32(text, 2166136261), fnv1a32(text, 1315423911))
end
M._fnv1a32 = fnv1a32

local counter = 0
-- A request id: 16 random bytes from /dev/urandom as hex (time and a counter without it).
local function request_id()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(16)
  if f then f:close() end
  if b and #b == 16 then return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
  counter = counter + 1
  return string.format("%x-%x-%x", os.time(), counter, math.random(0, 2147483646))
end

----------------------------------------------------------------------------------------------
-- the observer (called by taskapi.client)

--- Records a create's intent before its request; returns its request id.
function Ledger:before_create(provider, typ, endpoint, params)
  local digest, derr = M.digest(params)
  if not digest then return nil, db_err(derr, "digest of the parameters") end
  if not self.db then return closed("intent") end
  local rid = request_id()
  local ok, err = self:_intent(rid, provider, typ, endpoint, digest, now())
  if not ok then return nil, err end
  return rid
end

--- Records a create's outcome: the task id (and the task, pending), or err: indeterminate
--- (err.indeterminate) or refused (anything else: the provider made no task).
function Ledger:after_create(rid, provider, typ, id, err)
  if not self.db then return closed("outcome") end
  if id then return self:_outcome(rid, provider, typ, id, "created", nil, now()) end
  local outcome = err and err.indeterminate and "indeterminate" or "refused"
  return self:_outcome(rid, provider, typ, nil, outcome, tostring(err and err.message or "unknown error"):sub(1, 1000), now())
end

-- The compact record of a task: no raw payload.
local function compact(task)
  local outputs = json.array({})
  for i, o in ipairs(task.outputs or {}) do
    outputs[i] = { name = o.name, url = o.url, kind = o.kind, id = o.id }
  end
  local e = type(task.error) == "table" and { code = task.error.code, message = task.error.message } or nil
  return json.encode({
    id = task.id, provider = task.provider, type = task.type, state = task.state, done = task.done == true,
    ok = task.ok == true, progress = task.progress, outputs = outputs, error = e,
    created_at = task.created_at, completed_at = task.completed_at, credits = task.credits,
  })
end

--- Records a task's state when it changed (one atomic write: the task's record, an event).
function Ledger:task_seen(task)
  if not self.db then return nil end
  local key = task.provider .. " " .. task.id
  local mark = task.state .. (task.done and "+" or "")
  if self.seen[key] == mark then return true end
  local ok, err = self:_task(task, compact(task), now())
  if ok then self.seen[key] = mark else self.last_error = err end
  return ok, err
end

-- size, sha256 | nil, mtime, absolute path of a file on disk (nil when it is not a regular
-- file). no_digest: leave the SHA-256 out.
local function fingerprint(path, no_digest)
  local size, mtime, abs = core.file_stat(path)
  if not size then return nil end
  local sha = not no_digest and core.sha256_file and core.sha256_file(path) or nil
  return size, sha, mtime, abs
end
M.fingerprint = fingerprint

--- Records every file of files (download's array) of task; adopted: found by resume.
function Ledger:files_saved(task, files, adopted)
  if not self.db or type(files) ~= "table" then return nil end
  local first_err
  for _, f in ipairs(files) do
    if f.path and f.name then
      local size, sha, mtime, abs = fingerprint(f.path)
      local ok, err = self:_file(task, f.name, abs or f.path, size or f.bytes or 0, sha, mtime, adopted and 1 or 0, now())
      if not ok and not first_err then first_err = err end
    end
  end
  if first_err then
    self.last_error = first_err
    return nil, first_err
  end
  return true
end

----------------------------------------------------------------------------------------------
-- reading

local function decode(text)
  if type(text) ~= "string" or text == "" then return nil end
  local v = core.json_decode(text)
  return type(v) == "table" and v or nil
end

--- Is a recorded file still on disk as saved? The same size and mtime; or, the mtime
--- changed, the same SHA-256 (read only then, so that listing a ledger hashes nothing).
--- path: look there instead of the recorded path (the same file, moved).
function M.file_intact(row, path)
  path = path or row.path
  local size, _, mtime = fingerprint(path, true)
  if not size or size ~= row.bytes then return false end
  if row.mtime and mtime and math.abs(mtime - row.mtime) < 1e-6 then return true end
  if row.sha256 and core.sha256_file then return core.sha256_file(path) == row.sha256 end
  return false
end

-- A task record from its row and its file rows: the columns, the compact task's fields, its
-- files (by output name) and `unsaved`, the names of outputs without an intact saved file.
local function record(row, file_rows, check_files)
  local c = decode(row.task) or {}
  local r = {
    id = row.id, provider = row.provider, type = row.type or c.type, state = row.state, done = row.done == 1,
    ok = row.ok == 1, progress = row.progress, rid = row.rid, first_at = row.first_at, updated_at = row.updated_at,
    outputs = c.outputs or {}, error = c.error, created_at = c.created_at, completed_at = c.completed_at,
    credits = c.credits, files = {}, unsaved = {},
  }
  for _, f in ipairs(file_rows or {}) do
    if check_files then f.intact = M.file_intact(f) end
    r.files[f.name] = f
  end
  if r.ok then
    for _, o in ipairs(r.outputs) do
      local f = r.files[o.name]
      if not f or (check_files and not f.intact) then r.unsaved[#r.unsaved + 1] = o.name end
    end
  end
  r.pending = not r.done or #r.unsaved > 0
  return r
end

-- filter: nil or a table whose keys are all in known; returns the table or nil, err
local function check_filter(what, filter, known)
  if filter ~= nil and type(filter) ~= "table" then return errors.invalid("ledger:" .. what .. " expects a filter table") end
  filter = filter or {}
  for k in pairs(filter) do
    if not known[k] then return errors.invalid("ledger:" .. what .. ": unknown filter '" .. tostring(k):sub(1, 40) .. "'") end
  end
  return filter
end

--- Task records, oldest first. filter: provider, state, pending (true: not finalized, or
--- succeeded with an output not saved (intact on disk); false: the others), check_files
--- (default true: a saved file counts only when still intact on disk).
function Ledger:tasks(filter)
  local err
  filter, err = check_filter("tasks", filter, { provider = true, state = true, pending = true, check_files = true })
  if not filter then return nil, err end
  if not self.db then return closed("tasks") end
  local rows, files = self:_task_rows(filter.provider)
  if not rows then return nil, files end
  local out = {}
  for i, row in ipairs(rows) do
    if not filter.state or row.state == filter.state then
      local r = record(row, files[i], filter.check_files ~= false)
      if filter.pending == nil or r.pending == filter.pending then out[#out + 1] = r end
    end
  end
  return out
end

--- The record of task id (of provider, when given; else the first one), or nil.
function Ledger:get(id, provider)
  if type(id) ~= "string" then return errors.invalid("ledger:get expects a task id (a string)") end
  if not self.db then return closed("get") end
  local row, files = self:_task_row(id, provider)
  if not row then return nil, files end
  return record(row, files, true)
end

-- The store's rows (its method `fetch`) that `keep(row, filter)` keeps, filter checked
-- against `known` first; nil, err.
local function select_rows(self, what, filter, known, fetch, keep)
  local err
  filter, err = check_filter(what, filter, known)
  if not filter then return nil, err end
  if not self.db then return closed(what) end
  local rows
  rows, err = self[fetch](self)
  if not rows then return nil, err end
  local out = {}
  for _, r in ipairs(rows) do
    if keep(r, filter) then out[#out + 1] = r end
  end
  return out
end

local INTENT_FILTERS = { provider = true, indeterminate = true, outcome = true }
local function keep_intent(r, filter)
  r.outcome = r.outcome or "open"
  local keep = (not filter.provider or r.provider == filter.provider) and (not filter.outcome or r.outcome == filter.outcome)
  if filter.indeterminate ~= nil then
    local ind = r.outcome == "indeterminate" or r.outcome == "open"
    keep = keep and ind == filter.indeterminate
  end
  return keep
end

--- Intents, oldest first. filter: provider, indeterminate (true: those whose task may exist
--- without an id: outcome 'indeterminate', or open (no outcome recorded: the process died
--- during the create, or is still in it), outcome ("open" or a recorded one).
function Ledger:intents(filter)
  return select_rows(self, "intents", filter, INTENT_FILTERS, "_intent_rows", keep_intent)
end

--- Marks an indeterminate (or open) intent as found: its task id, the task pending.
function Ledger:reconciled(rid, provider, id, typ)
  if not self.db then return closed("reconcile") end
  local ok, err = self:_reconciled(rid, provider, id, typ, now())
  if ok == false then return nil, db_err("task " .. id .. " is already in the ledger", "reconcile") end
  return ok, err
end

local EVENT_FILTERS = { provider = true, task_id = true }
local function keep_event(e, filter)
  return (not filter.provider or e.provider == filter.provider) and (not filter.task_id or e.task_id == filter.task_id)
end

--- Events, in the ledger's order (seq). filter: provider, task_id (a task's id, or an
--- intent's request id for its own events: intent, refused, indeterminate).
function Ledger:events(filter)
  return select_rows(self, "events", filter, EVENT_FILTERS, "_event_rows", keep_event)
end

----------------------------------------------------------------------------------------------
-- client:resume and client:reconcile

-- resume takes wait's options and download's (their own tables: taskapi.ops.wait.OPTIONS,
-- taskapi.ops.download.OPTIONS); the two download has in common with wait go by these names
local RENAMED = { download_timeout = "timeout", on_download_progress = "on_progress" }

-- The file a completed download of output `out` left in o.dir (a process killed between the
-- rename and the ledger's record), or nil. The C module renames a part file to its final
-- name only once complete, so a file under that name is whole.
local function on_disk(client, task, out, o)
  local naming = require "taskapi.ops.naming"
  local ext = naming.ext_of(client.def, out, o)
  for _, e in ipairs(ext and { ext } or naming.TYPE_EXTS) do
    local path = naming.names(o, task, out, e)
    if core.file_stat(path) then return path end
  end
  return nil
end

local function positive_int(v, name, max)
  if type(v) ~= "number" or v % 1 ~= 0 or v < 1 or v > max then
    return errors.invalid(name .. " must be a whole number from 1 to " .. max)
  end
  return v
end

-- The client's ledger for call `what`, and opts checked to be a table (named `expects`).
local function with_ledger(client, what, opts, expects)
  local L = client.ledger
  if not L then return errors.invalid(what .. ": this client has no ledger (taskapi.new{ ledger = path or URL })") end
  if type(opts) ~= "table" then return errors.invalid(what .. " expects " .. expects) end
  return L
end

--- The results of a finalized, succeeded task (fresh from the provider) that the client's
--- ledger has not saved, saved: a file recorded and intact on disk is skipped, one complete
--- under its final name in o.dir is adopted, the others downloaded (dopts: download's
--- options; want: a set of output names, or nil for all). Returns the files (saved, adopted
--- or skipped) and the first error, if any. client:resume and the fleet's workers
--- (taskapi.ops.serve) save results through it.
function M.save_results(client, task, o, dopts, want)
  local L = client.ledger
  local rec, err = L:get(task.id, client.def.name)
  if not rec and err then return {}, err end -- (what is saved cannot be known: nothing is done)
  local names, adopt, list = {}, {}, {}
  for _, out in ipairs(task.outputs) do
    if not want or want[out.name] then
      local f = rec and rec.files[out.name]
      if f and f.intact then
        list[#list + 1] = { name = out.name, path = f.path, bytes = f.bytes, skipped = true }
      else
        -- under its final name in dir: unrecorded (whole: renamed only once complete), or
        -- the recorded file itself, moved there
        local path = not o.overwrite and on_disk(client, task, out, o)
        if path and f and not M.file_intact(f, path) then path = nil end
        if path then
          adopt[#adopt + 1] = { name = out.name, path = path, bytes = core.file_stat(path), adopted = true }
        else
          names[#names + 1] = out.name
        end
      end
    end
  end
  if #adopt > 0 then L:files_saved(task, adopt, true) end
  for _, f in ipairs(adopt) do list[#list + 1] = f end
  if #names > 0 then
    local d = {}
    for k, v in pairs(dopts) do d[k] = v end
    d.outputs = names
    local files, derr = client:download(task, d)
    if not files then
      err = derr
      files = derr.files or {}
    end
    for _, f in ipairs(files) do
      if f.skipped then
        -- files branch: download skips a file already there; here it is not the recorded one
        -- (an intact or unrecorded one was found above)
        err = err or errors.new("io", "file '" .. tostring(f.path) ..
          "' exists and is not the file the ledger recorded (pass overwrite = true to replace it)", { task_id = task.id })
      else
        list[#list + 1] = f
      end
    end
  end
  return list, err
end

--- client:resume(opts): waits for every unfinished task of the client's provider in its
--- ledger and downloads every result not yet saved (a file already on disk as recorded, or
--- complete under its final name, is skipped), concurrently. opts: dir (required), the
--- options of wait (timeout, interval, max_interval, min_interval, on_progress) and of
--- download (outputs, format, overwrite, max_bytes, uhd, min_speed, min_speed_time;
--- download_timeout and on_download_progress for its timeout and on_progress), concurrency (downloads at once;
--- 4). Returns tasks, errs (keyed by task id, like wait_all) and files (task id -> the
--- files saved, adopted or skipped).
function M.resume(client, opts)
  local L, err = with_ledger(client, "resume", opts, "an options table with 'dir'")
  if not L then return nil, err end
  if opts.dir == nil then return errors.invalid("resume: option 'dir' (the folder for the results) is required") end
  local download = require "taskapi.ops.download"
  local waiting = require "taskapi.ops.wait"
  local wopts, dopts, concurrency = {}, {}, 4
  for k, v in pairs(opts) do
    if waiting.OPTIONS[k] then wopts[k] = v
    elseif RENAMED[k] then dopts[RENAMED[k]] = v
    elseif download.OPTIONS[k] then dopts[k] = v
    elseif k == "concurrency" then
      local c, cerr = positive_int(v, "resume: option 'concurrency'", 64)
      if not c then return nil, cerr end
      concurrency = c
    else
      return errors.invalid("resume: unknown option '" .. tostring(k):sub(1, 40) .. "'")
    end
  end
  local scheduler = require "taskapi.run.scheduler"
  local o
  o, err = download.check_opts(client.def, dopts)
  if not o then return nil, err end
  local p
  p, err = waiting.check_opts(client, wopts)
  if not p then return nil, err end
  local name = client.def.name
  local recs
  recs, err = L:tasks { provider = name, pending = true }
  if not recs then return nil, err end
  local want
  if o.outputs then
    want = {}
    for _, n in ipairs(o.outputs) do want[n] = true end
  end
  local tasks, errs, saved = {}, {}, {}

  -- a finalized task (fresh from the provider): its results not yet saved
  local function fetch(task)
    tasks[task.id] = task
    if not task.ok then return end
    local list, ferr = M.save_results(client, task, o, dopts, want)
    if ferr then errs[task.id] = ferr end
    saved[task.id] = list
  end

  local function body()
    local s = scheduler.current()
    local queue, head, tail, idle, ended = {}, 1, 0, {}, false
    local function push(item)
      tail = tail + 1
      queue[tail] = item
      local ev = table.remove(idle)
      if ev then ev.signal() end
    end
    local function worker()
      local ev = s:event()
      while true do
        if head <= tail then
          local item = queue[head]
          queue[head], head = nil, head + 1
          if item.task then
            fetch(item.task)
          else
            local t, serr = client:_status(item.id)
            if t and t.done then fetch(t)
            elseif t then tasks[item.id] = t -- the ledger said finalized; the provider does not
            else errs[item.id] = serr end
          end
        elseif ended then
          return
        else
          idle[#idle + 1] = ev
          ev.wait()
        end
      end
    end
    local hs, waits = {}, {}
    for i = 1, concurrency do hs[i] = s:spawn(worker) end
    for _, r in ipairs(recs) do
      if r.done then push({ id = r.id }) else waits[#waits + 1] = r.id end
    end
    waiting.wait_many(client, s, waits, p, function(sid, t, e)
      if t then push({ task = t }) else errs[sid] = e end
    end)
    ended = true
    for _, ev in ipairs(idle) do ev.signal() end
    idle = {}
    for i = 1, #hs do
      local ok, jerr = hs[i]:join()
      if ok == nil and jerr then error(jerr, 0) end
    end
  end
  if scheduler.current() then body() else scheduler.run(body) end
  return tasks, errs, saved
end

local function norm(t) return type(t) == "string" and t:lower():gsub("%-", "_") or nil end

-- The names a provider's usage listing may give the type of intent `it`.
local function type_names(def, it)
  local names = { [norm(it.type)] = true }
  local ep = it.endpoint
  if ep then
    names[norm(ep:match("([^/]+)$"))] = true
    for n, path in pairs(def.create_types or {}) do
      if path == ep then names[norm(n)] = true end
    end
  end
  return names
end

--- client:reconcile(opts): turns indeterminate (and open) intents of the client's provider
--- into task ids where the provider lists the account's tasks (Tripo V3's usage): a row of
--- the same type, created within `window` seconds of the intent, whose id is not in the
--- ledger yet, and placed in the listing between the tasks of the creates answered before
--- the intent and those recorded after its answer (the ledger's events give that order).
--- Intents are served oldest first, each taking the oldest row that fits. opts: window (seconds; 60), min_age (an open
--- intent younger than this may still be in flight in another process; the client's
--- timeout times its attempts, plus 5), max_rows (usage rows read at most; 2000).
--- Returns { found = {{rid=, task_id=, type=, at=, created_at=}...}, left = {intents...} }.
function M.reconcile(client, opts)
  local L, lerr = with_ledger(client, "reconcile", opts or {}, "an options table")
  if not L then return nil, lerr end
  opts = opts or {}
  for k, v in pairs(opts) do
    if k ~= "window" and k ~= "min_age" and k ~= "max_rows" then
      return errors.invalid("reconcile: unknown option '" .. tostring(k):sub(1, 40) .. "' (known: window, min_age, max_rows)")
    end
    if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then
      return errors.invalid("reconcile: option '" .. k .. "' must be a number >= 0")
    end
  end
  local def = client.def
  local window = opts.window or 60
  local min_age = opts.min_age or (client.timeout * (client.retries + 1) + 5)
  local max_rows = opts.max_rows or 2000
  local list, err = L:intents { provider = def.name, indeterminate = true }
  if not list then return nil, err end
  local result = { found = {}, left = {} }
  local t_now, todo = os.time(), {}
  for _, it in ipairs(list) do
    if def.usage_path and (it.outcome == "indeterminate" or t_now - it.at >= min_age) then
      todo[#todo + 1] = it
    else
      result.left[#result.left + 1] = it
    end
  end
  if #todo == 0 then return result end
  local lo = math.huge
  for _, it in ipairs(todo) do if it.at - window < lo then lo = it.at - window end end
  local rows, offset = {}, 0
  while offset < max_rows do
    local page, uerr = client:usage { limit = def.usage_max, offset = offset }
    if not page then return nil, uerr end
    for _, r in ipairs(page) do rows[#rows + 1] = r end
    if #page < def.usage_max then break end
    local last = page[#page]
    if last.created_at and last.created_at < lo then break end
    offset = offset + #page
  end
  local known
  known, err = L:ids(def.name)
  if not known then return nil, err end
  local all
  all, err = L:intents { provider = def.name }
  if not all then return nil, err end
  local pos = {}
  for i, r in ipairs(rows) do if r.task_id and not pos[r.task_id] then pos[r.task_id] = i end end
  for _, it in ipairs(todo) do
    local names = type_names(def, it)
    local hi_t = (it.settled_at or it.at) + window
    -- the bounds the ledger's order gives in the listing (newest first): I's task is newer
    -- than the task of every create answered before I was recorded, and older than that of
    -- every create recorded after I's answer
    local lo_i, hi_i = #rows + 1, 0 -- candidates: hi_i < index < lo_i
    for _, c in ipairs(all) do
      local at_c = c.outcome == "created" and pos[c.task_id]
      if at_c then
        if c.settled_seq and it.seq and c.settled_seq < it.seq and at_c < lo_i then lo_i = at_c end
        if it.settled_seq and c.seq and c.seq > it.settled_seq and at_c > hi_i then hi_i = at_c end
      end
    end
    local best
    for i = lo_i - 1, hi_i + 1, -1 do -- oldest first
      local r = rows[i]
      if r.task_id and not known[r.task_id] and r.created_at and names[norm(r.type) or ""] and
          r.created_at >= it.at - window and r.created_at <= hi_t then
        best = r
        break
      end
    end
    local ok
    if best then ok, err = L:reconciled(it.rid, def.name, best.task_id, it.type) end
    if ok then
      known[best.task_id] = true
      result.found[#result.found + 1] = { rid = it.rid, task_id = best.task_id, type = it.type, at = it.at,
        created_at = best.created_at }
    else
      it.reconcile_error = err
      result.left[#result.left + 1] = it
    end
  end
  return result
end

return M
