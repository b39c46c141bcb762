-- taskapi.cli: the `taskapi` command. One table of subcommands (COMMANDS): each declares its
-- usage, its own options and a run function; the parsing of options, the client, the key,
-- the output (plain, live on a terminal, or --json) and the exit codes are shared.
--
-- Exit codes: 0 all succeeded, 1 a task failed, 2 usage or local file error, 3 API or
-- network error, 4 timeout (waiting), 5 a task is not finished yet (status, download).
-- With several tasks the most serious wins: 2, 3, 4, 1, 5, 0.
local M = {}

local json = require "taskapi.json"

local EXIT = { ok = 0, failed = 1, usage = 2, api = 3, timeout = 4, unfinished = 5 }
local RANK = { [0] = 0, [5] = 1, [1] = 2, [4] = 3, [3] = 4, [2] = 5 }

----------------------------------------------------------------------------------------------
-- output

local function isatty()
  local ok = os.execute("test -t 1")
  return ok == true or ok == 0
end

-- Decimal units, named as such: 800,000,000 bytes are 800.0 MB.
local function fmt_bytes(n)
  if n >= 1e9 then return string.format("%.1f GB", n / 1e9) end
  if n >= 1e6 then return string.format("%.1f MB", n / 1e6) end
  if n >= 1e3 then return string.format("%.1f kB", n / 1e3) end
  return string.format("%d B", n)
end
M.fmt_bytes = fmt_bytes

local function bar(fraction, width)
  width = width or 20
  local n = math.floor(math.max(0, math.min(1, fraction)) * width + 0.5)
  return "[" .. string.rep("#", n) .. string.rep("-", width - n) .. "]"
end

-- The live lines of a terminal: a block of lines at the bottom, one per key, redrawn in
-- place (cursor up, erase); permanent lines are printed above the block. Not on a terminal:
-- plain lines, one per change worth logging.
local Live = {}
Live.__index = Live

local function new_live(out, tty)
  return setmetatable({ out = out, tty = tty, keys = {}, text = {}, drawn = 0, last = {} }, Live)
end

function Live:redraw(permanent)
  local w = self.out
  if self.drawn > 0 then w:write("\27[", self.drawn, "A\r\27[J") end
  if permanent then w:write(permanent, "\n") end
  for _, k in ipairs(self.keys) do w:write("\r\27[2K", self.text[k], "\n") end
  self.drawn = #self.keys
  w:flush()
end

--- Sets the live line of key; not on a terminal it is printed when `plain` is true and it
--- changed.
function Live:set(key, text, plain)
  if not self.text[key] then self.keys[#self.keys + 1] = key end
  self.text[key] = text
  if self.tty then
    self:redraw()
  elseif plain and self.last[key] ~= text then
    self.last[key] = text
    self.out:write(text, "\n")
    self.out:flush()
  end
end

--- A permanent line (above the live block on a terminal).
function Live:print(text)
  if self.tty then return self:redraw(text) end
  self.out:write(text, "\n")
  self.out:flush()
end

--- Ends the live line of key with a permanent text.
function Live:finish(key, text)
  if self.text[key] then
    self.text[key] = nil
    for i, k in ipairs(self.keys) do if k == key then table.remove(self.keys, i) break end end
  end
  if self.tty or self.last[key] ~= text then
    self.last[key] = text
    self:print(text)
  end
end

-- elapsed: seconds since the task was read (the ETA counts down between polls).
local function task_line(task, elapsed)
  local parts = { task.id, string.format("%-9s", task.state) }
  if task.progress then
    parts[#parts + 1] = bar(task.progress / 100) .. string.format(" %3d%%", task.progress)
  end
  if task.queue_position and task.state == "queued" then parts[#parts + 1] = "queue " .. task.queue_position end
  if task.eta and not task.done then
    parts[#parts + 1] = "eta " .. math.max(0, math.floor(task.eta - (elapsed or 0) + 0.5)) .. "s"
  end
  if task.error and task.error.message then parts[#parts + 1] = "(" .. tostring(task.error.message) .. ")" end
  return table.concat(parts, "  ")
end

-- Every --json line has `object`: "task", "file", "error", "created", "upload" or "balance".
local function task_json(task)
  local outputs = json.array({})
  for i, o in ipairs(task.outputs or {}) do outputs[i] = { name = o.name, url = o.url, kind = o.kind } end
  local e = task.error and { code = task.error.code, message = task.error.message } or nil
  return {
    object = "task", id = task.id, provider = task.provider, state = task.state, status = task.status, done = task.done,
    ok = task.ok, progress = task.progress, queue_position = task.queue_position, eta = task.eta,
    outputs = outputs, error = e, trace_id = task.trace_id,
  }
end

local function err_json(err)
  return { kind = err.kind, message = err.message, status = err.status, code = err.code,
    trace_id = err.trace_id }
end

local function err_line(id, err)
  return { object = "error", id = id, error = err_json(err) }
end

-- The library speaks Lua (option names); the command line has flags.
local function cli_message(err)
  if type(err) == "table" and type(err.message) == "string" then
    err.message = err.message:gsub("pass overwrite = true to replace it", "pass --overwrite to replace it")
  end
  return err
end

-- "task X is not finished (state ...)": the library's refusal to download an unfinished task
local function unfinished(err)
  return err.kind == "invalid_argument" and type(err.message) == "string" and
    err.message:find("^task %S+ is not finished %(state ") ~= nil
end

----------------------------------------------------------------------------------------------
-- the run context shared by the subcommands

local Ctx = {}
Ctx.__index = Ctx

--- Records an outcome (an exit code); the most serious one is the process's exit code.
function Ctx:outcome(code)
  if RANK[code] > RANK[self.code] then self.code = code end
end

--- Prints an error on stderr and records its exit code (timeout only counts as such while
--- waiting: elsewhere a timed-out request is a network error).
function Ctx:fail(err, waiting)
  cli_message(err)
  local text = tostring(err)
  -- "taskapi auth: ...", not "taskapi: taskapi auth: ..."
  io.stderr:write(text:find("^taskapi[ :]") and "" or "taskapi: ", text, "\n")
  local kind = type(err) == "table" and err.kind
  if kind == "invalid_argument" and unfinished(err) then self:outcome(EXIT.unfinished)
  elseif kind == "invalid_argument" or kind == "io" then self:outcome(EXIT.usage)
  elseif kind == "task_failed" then self:outcome(EXIT.failed)
  elseif kind == "timeout" and waiting then self:outcome(EXIT.timeout)
  else self:outcome(EXIT.api) end
end

--- One JSON object on a line (--json), or a plain line.
function Ctx:emit(obj, line)
  if self.opts.json then
    local s = assert(json.encode(obj))
    io.stdout:write(s, "\n")
  elseif line then
    self.live:print(line)
  end
  io.stdout:flush()
end

function Ctx:task_outcome(task)
  if task.done and not task.ok then self:outcome(EXIT.failed) end
  if not task.done then self:outcome(EXIT.unfinished) end
end

-- Downloads the results of one task (a task table or an id), with a live line per file.
-- The folder is made when missing (by the library).
function Ctx:download(task, dopts)
  local id = type(task) == "table" and task.id or task
  local started, last = {}, {}
  local now = require("taskapi.core").now
  local o = { dir = dopts.dir, outputs = dopts.outputs, format = dopts.format, overwrite = dopts.overwrite }
  o.on_progress = function(done, total, name)
    local key = id .. " " .. tostring(name)
    local t = now()
    started[key] = started[key] or t
    if self.live.tty and last[key] and t - last[key] < 0.1 and done ~= total then return end
    last[key] = t
    local speed = done / math.max(t - started[key], 0.001)
    local text = key .. "  " .. fmt_bytes(done) .. (total > 0 and " / " .. fmt_bytes(total) or "") ..
      "  " .. fmt_bytes(speed) .. "/s" .. (total > 0 and "  " .. bar(done / total) or "")
    self.live:set(key, text, false)
  end
  local t0 = now()
  local files, err = self.client:download(task, o)
  if not files then
    err.task_id = err.task_id or id
    self:fail(err)
    if self.opts.json then self:emit(err_line(id, err)) end
    return nil
  end
  for _, f in ipairs(files) do
    -- the average speed of the whole call: shown even when the file came too fast for a
    -- progress report
    local line = "saved " .. f.path .. " (" .. fmt_bytes(f.bytes) .. ", " ..
      fmt_bytes(f.bytes / math.max(now() - (started[id .. " " .. f.name] or t0), 0.001)) .. "/s)"
    if f.skipped then line = "kept " .. f.path .. " (exists; --overwrite replaces it)" end -- files branch
    if self.opts.json then
      self:emit({ object = "file", id = id, name = f.name, path = f.path, bytes = f.bytes, content_type = f.content_type,
        skipped = f.skipped })
    else
      self.live:finish(id .. " " .. f.name, line)
    end
  end
  return files
end

-- Waits for ids concurrently (each as it finishes), with a live line per task; downloads
-- the results of each succeeded one into o.download when set. On a terminal a ticker redraws
-- the live lines every second between polls, the ETA counting down.
function Ctx:wait(ids, o)
  local wopts = { timeout = o.timeout, interval = o.interval, min_interval = o.min_interval }
  local now = require("taskapi.core").now
  local seen = {} -- id -> {task =, at =} of the live lines
  if not self.opts.json then
    wopts.on_progress = function(task)
      seen[task.id] = { task = task, at = now() }
      self.live:set(task.id, task_line(task), true)
    end
  end
  local function loop()
    -- the iterator called by hand, not by `for`: plain Lua 5.1 cannot yield across a for
    -- iterator, and inside run the iterator yields
    local next_done = self.client:each_completed(ids, wopts)
    while true do
      local task, err = next_done()
      if task == nil then break end
      if err then
        seen[err.task_id or task.id] = nil
        self:fail(err, true)
        self:emit(err_line(err.task_id or task.id, err))
      else
        seen[task.id] = nil
        -- the final line: redrawn on a terminal, printed once otherwise; or the JSON object
        if self.opts.json then self:emit(task_json(task)) else self.live:finish(task.id, task_line(task)) end
        self:task_outcome(task)
        if o.download and task.ok then self:download(task, { dir = o.download }) end
      end
    end
  end
  if not self.live.tty then return loop() end
  local taskapi = require "taskapi"
  taskapi.run(function()
    local ticker = taskapi.spawn(function()
      while true do
        taskapi.sleep(1)
        for id, s in pairs(seen) do
          if s.task.eta and self.live.text[id] then self.live:set(id, task_line(s.task, now() - s.at), false) end
        end
      end
    end)
    -- joined, not pcall'ed: plain Lua 5.1 cannot yield across pcall either
    local _, err = taskapi.spawn(loop):join()
    ticker:cancel()
    if err then error(err.kind == "runtime" and err.value ~= nil and err.value or err, 0) end
  end)
end

----------------------------------------------------------------------------------------------
-- --param k=v

local function param_value(v)
  if v == "true" then return true end
  if v == "false" then return false end
  if v:match("^%-?%d+$") and not v:match("^%-?0%d") then -- "007" stays a string
    local digits = v
    if math.tointeger then
      local n = math.tointeger(tonumber(digits))
      if n and string.format("%d", n) == digits then return n end
    elseif #digits:gsub("^%-", "") <= 15 then
      return tonumber(digits)
    end
    return json.raw(digits) -- an integer wider than the runtime's: sent exactly as written
  end
  if v:match("^%-?%d+%.%d+$") or v:match("^%-?%d+%.?%d*[eE][%+%-]?%d+$") then return tonumber(v) end
  return v
end
M.param_value = param_value

--- Puts "a.b.c=v" into t as t.a.b.c = value; returns true or nil, message.
local function put_param(t, spec)
  local key, v = spec:match("^([^=]+)=(.*)$")
  if not key then return nil, "--param expects key=value, got '" .. spec .. "'" end
  local path = {}
  for part in (key .. "."):gmatch("([^.]*)%.") do
    if part == "" then return nil, "--param key '" .. key .. "' has an empty part" end
    path[#path + 1] = part
  end
  for i = 1, #path - 1 do
    local k = path[i]
    if t[k] == nil then t[k] = {} end
    if type(t[k]) ~= "table" or getmetatable(t[k]) then
      return nil, "--param key '" .. key .. "': '" .. k .. "' already has a value"
    end
    t = t[k]
  end
  t[path[#path]] = param_value(v)
  return true
end
M.put_param = put_param

----------------------------------------------------------------------------------------------
-- the subcommands

-- Options: name -> {arg = "WORD" (takes a value) | nil (a flag), number = true, many = true,
-- help = "..."}. Every command also takes the global options below.
-- The built-in provider names (the definitions' registry when it has one).
local function provider_names()
  local p = require "taskapi.api.provider"
  return p.BUILTIN_NAMES or { "tripo", "sellerpic" }
end

local GLOBAL = {
  provider = { arg = "NAME", help = table.concat(provider_names(), ", ") ..
    " (default tripo: Tripo's current V3 API; any case)" },
  region = { arg = "NAME", help = "Tripo: cn for Tripo's China hosts (a key works in its own region)" },
  ["base-url"] = { arg = "URL", help = "another API root (the fake provider, a proxy)" },
  ["api-key"] = { arg = "KEY", help = "the key (lands in your shell history: prefer the environment)" },
  json = { help = "one JSON object per task or file per line" },
  help = { help = "this text" },
  ledger = { arg = "PATH", help = "record creates, states and files in this ledger: a SQLite file or a redis:// URL (or TASKAPI_LEDGER)" },
}

local WAIT_OPTS = {
  timeout = { arg = "S", number = true, help = "give up waiting after S seconds (900)" },
  interval = { arg = "S", number = true, help = "first polling step when the provider gives no ETA (2)" },
  ["min-interval"] = { arg = "S", number = true, help = "never poll one task faster (the provider's; lower only for fakes)" },
}

local function with(base, extra)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local COMMANDS = {}
local ORDER = { "status", "wait", "download", "create", "upload", "balance", "tasks", "resume", "serve", "fake" }

COMMANDS.status = {
  usage = "status ID...",
  about = "read the status of tasks (one poll each)",
  min_args = 1,
  run = function(ctx, args)
    for _, id in ipairs(args) do
      local task, err = ctx.client:status(id)
      if not task then
        ctx:fail(err)
        ctx:emit(err_line(id, err))
      else
        ctx:emit(task_json(task), task_line(task))
        ctx:task_outcome(task)
      end
    end
  end,
}

COMMANDS.wait = {
  usage = "wait ID... [--timeout S] [--download DIR]",
  about = "wait until tasks are finalized (a live line per task on a terminal)",
  min_args = 1,
  opts = with(WAIT_OPTS, { download = { arg = "DIR", help = "download the results of each succeeded task into DIR" } }),
  run = function(ctx, args, o)
    ctx:wait(args, { timeout = o.timeout, interval = o.interval, min_interval = o["min-interval"], download = o.download })
  end,
}

COMMANDS.download = {
  usage = "download ID... --dir DIR [--output NAME] [--format FMT]",
  about = "download the results of finished tasks",
  min_args = 1,
  opts = {
    dir = { arg = "DIR", required = true, help = "the folder (made when missing)" },
    output = { arg = "NAME", many = true, help = "only this output (repeatable)" },
    format = { arg = "FMT", help = "SellerPic: jpg png webp (images), mp4 gif webp (videos)" },
    overwrite = { help = "replace existing files" },
  },
  run = function(ctx, args, o)
    for _, id in ipairs(args) do
      ctx:download(id, { dir = o.dir, outputs = o.output, format = o.format, overwrite = o.overwrite })
    end
  end,
}

COMMANDS.create = {
  usage = "create --type TYPE [--param k=v ...] [--wait] [--download DIR]",
  about = "start a task; prints its id (with --wait: waits for it, like wait)",
  opts = with(WAIT_OPTS, {
    type = { arg = "TYPE", required = true, help = "the task type (text_to_model, instructEdit, ...)" },
    param = { arg = "K=V", many = true, help = "a parameter: numbers stay numbers, true/false are booleans, " ..
      "a.b=v nests (repeatable)" },
    wait = { help = "wait for the task" },
    download = { arg = "DIR", help = "wait, then download the results into DIR" },
  }),
  run = function(ctx, _, o)
    local params = {}
    for _, p in ipairs(o.param or {}) do
      local ok, perr = put_param(params, p)
      if not ok then return ctx:usage(perr) end
    end
    params.type = o.type
    local id, err = ctx.client:create(params)
    if not id then return ctx:fail(err) end
    if o.wait or o.download then
      if not ctx.opts.json then io.stdout:write("created ", id, "\n") end
      return ctx:wait({ id }, { timeout = o.timeout, interval = o.interval, min_interval = o["min-interval"],
        download = o.download })
    end
    ctx:emit({ object = "created", id = id, provider = ctx.client.def.name }, id)
  end,
}

COMMANDS.upload = {
  usage = "upload FILE",
  about = "upload an image (jpg, jpeg, png, webp; Tripo V3 also bmp, tiff and models: glb obj fbx stl 3mf usdz); prints the token to pass to create",
  min_args = 1, max_args = 1,
  run = function(ctx, args)
    local ref, err = ctx.client:upload(args[1])
    if not ref then return ctx:fail(err) end
    local field = ctx.client.def.upload_result
    ctx:emit({ object = "upload", path = args[1], provider = ctx.client.def.name, ref = ref, [field] = ref }, ref)
  end,
}

COMMANDS.balance = {
  usage = "balance",
  about = "the account's credits",
  max_args = 0,
  run = function(ctx)
    local b, err = ctx.client:balance()
    if not b then return ctx:fail(err) end
    local keys, obj = {}, { object = "balance" }
    for k, v in pairs(b) do
      if type(v) ~= "table" then keys[#keys + 1] = k end
      if k ~= "object" then obj[k] = v end
    end
    table.sort(keys)
    local lines = {}
    for _, k in ipairs(keys) do lines[#lines + 1] = k .. ": " .. tostring(b[k]) end
    ctx:emit(obj, table.concat(lines, "\n"))
  end,
}

-- ledger: the path of --ledger or TASKAPI_LEDGER, or nil
local function ledger_path(o, env)
  local p = o.ledger
  if p == nil or p == "" then p = env("TASKAPI_LEDGER") end
  if p == "" then p = nil end
  return p
end

COMMANDS.tasks = {
  usage = "tasks [--pending] [--json]",
  about = "the tasks of the ledger (--ledger or TASKAPI_LEDGER), and the creates that may have made a task",
  max_args = 0,
  no_client = true, -- reads the ledger only: no key needed
  opts = { pending = { help = "only tasks not finished, or with results not saved" } },
  run = function(ctx, _, o)
    local path = ledger_path(o, ctx.env)
    if not path then return ctx:usage("no ledger: pass --ledger PATH or set TASKAPI_LEDGER") end
    local L, err = require("taskapi.ledger").open(path)
    if not L then return ctx:fail(err) end
    local list
    list, err = L:tasks { pending = o.pending and true or nil, provider = o.provider }
    if not list then L:close() return ctx:fail(err) end
    for _, t in ipairs(list) do
      local files = json.array({})
      for _, out in ipairs(t.outputs) do
        local f = t.files[out.name]
        if f then files[#files + 1] = { name = out.name, path = f.path, bytes = f.bytes, intact = f.intact } end
      end
      local nout = #t.outputs
      ctx:emit({ id = t.id, provider = t.provider, type = t.type, state = t.state, done = t.done, ok = t.ok,
        progress = t.progress, pending = t.pending, files = files, unsaved = json.array(t.unsaved),
        error = t.error, updated_at = t.updated_at },
        string.format("%s  %-9s  %-9s  %s  %s", t.id, t.provider, t.state,
          t.ok and (nout - #t.unsaved) .. "/" .. nout .. " saved" or (t.done and "" or "pending"),
          os.date("!%Y-%m-%d %H:%M:%SZ", t.updated_at)))
    end
    local open = L:intents { indeterminate = true, provider = o.provider } or {}
    for _, it in ipairs(open) do
      ctx:emit({ intent = it.rid, provider = it.provider, type = it.type, outcome = it.outcome, at = it.at,
        error = it.error },
        string.format("intent %s  %-9s  %s  %s at %s: the task may exist (taskapi resume reconciles Tripo's)",
          it.rid, it.provider, it.type, it.outcome, os.date("!%Y-%m-%d %H:%M:%SZ", it.at)))
    end
    L:close()
  end,
}

COMMANDS.serve = {
  usage = "serve --ledger redis://HOST:PORT/DB?prefix=NAME --dir DIR [--lease S]",
  about = "one worker of a fleet sharing a ledger on Redis: poll, download and sweep the provider's tasks with the others",
  max_args = 0,
  opts = {
    dir = { arg = "DIR", required = true, help = "the folder of the results (the same for every worker)" },
    lease = { arg = "S", number = true, help = "seconds a claimed poll or download is this worker's (30, at least 2 x the minimum interval)" },
    ["idle-exit"] = { arg = "S", number = true, help = "stop once the fleet has had nothing to do for S seconds (default: run until stopped)" },
    pollers = { arg = "N", number = true, help = "coroutines claiming polls (4)" },
    concurrency = { arg = "N", number = true, help = "downloads at once (4)" },
    interval = WAIT_OPTS.interval, ["min-interval"] = WAIT_OPTS["min-interval"],
  },
  run = function(ctx, _, o)
    local c = ctx.client
    if not c.ledger or not c.ledger.prefix then
      return ctx:usage("serve needs a ledger on Redis: pass --ledger redis://HOST:PORT/DB?prefix=NAME (or set TASKAPI_LEDGER)")
    end
    local stats, err = c:serve(c.ledger, { dir = o.dir, lease = o.lease, idle_exit = o["idle-exit"], pollers = o.pollers,
      concurrency = o.concurrency, interval = o.interval,
      log = function(msg) io.stderr:write("taskapi: ", msg, "\n") end })
    if not stats then return ctx:fail(err) end
    stats.object = "worker"
    ctx:emit(stats, string.format("worker %s: %d polls (%d status requests, %d batch reads), %d finalized, %d files saved (%d resumed), %d Redis errors",
      stats.worker, stats.polls, stats.status_requests, stats.batch_reads, stats.finalized, stats.files, stats.resumed, stats.redis_errors))
  end,
}

COMMANDS.resume = {
  usage = "resume --dir DIR [--timeout S]",
  about = "with a ledger: find lost creates (Tripo), wait for unfinished tasks, save the results not yet saved",
  max_args = 0,
  opts = with(WAIT_OPTS, { dir = { arg = "DIR", required = true, help = "the folder (made when missing)" } }),
  run = function(ctx, _, o)
    local c = ctx.client
    if not c.ledger then return ctx:usage("no ledger: pass --ledger PATH or set TASKAPI_LEDGER") end
    local r, err = c:reconcile()
    if not r then ctx:fail(err) r = { found = {}, left = {} } end
    for _, f in ipairs(r.found) do
      ctx:emit({ intent = f.rid, found = f.task_id, type = f.type }, "intent " .. f.rid .. ": found task " .. f.task_id)
    end
    for _, it in ipairs(r.left) do
      ctx:emit({ intent = it.rid, provider = it.provider, type = it.type, outcome = it.outcome },
        "intent " .. it.rid .. " (" .. it.type .. ", " .. it.outcome .. "): the task may exist; not found")
    end
    local tasks, errs, files = c:resume { dir = o.dir, timeout = o.timeout, interval = o.interval,
      min_interval = o["min-interval"] }
    if not tasks then return ctx:fail(errs) end
    local ids = {}
    for id in pairs(tasks) do ids[#ids + 1] = id end
    for id in pairs(errs) do if not tasks[id] then ids[#ids + 1] = id end end
    table.sort(ids)
    for _, id in ipairs(ids) do
      local t, e = tasks[id], errs[id]
      if t then
        ctx:emit(task_json(t), task_line(t))
        ctx:task_outcome(t)
      end
      for _, f in ipairs(files[id] or {}) do
        local how = f.skipped and "kept" or f.adopted and "found" or "saved"
        ctx:emit({ id = id, name = f.name, path = f.path, bytes = f.bytes, [how] = true },
          how .. " " .. f.path .. (f.bytes and " (" .. fmt_bytes(f.bytes) .. ")" or ""))
      end
      if e then
        e.task_id = e.task_id or id
        ctx:fail(e, true)
        if ctx.opts.json then ctx:emit({ id = id, error = err_json(e) }) end
      end
    end
  end,
}

COMMANDS.fake = {
  usage = "fake start|stop|status [--ttl S] [--key KEY] [--state FILE]",
  about = "the local fake provider on 127.0.0.1 (start prints its URL; the key is test-key)",
  no_client = true,
  raw = true, -- its arguments go to taskapi.fake.cli as they are
  run = function(_, args)
    return require("taskapi.fake.cli").main(args)
  end,
}

----------------------------------------------------------------------------------------------
-- help and parsing

local function options_help(spec)
  local names = {}
  for k in pairs(spec) do names[#names + 1] = k end
  table.sort(names)
  local lines = {}
  for _, k in ipairs(names) do
    local o = spec[k]
    local left = "--" .. k .. (o.arg and " " .. o.arg or "")
    lines[#lines + 1] = string.format("  %-22s %s", left, o.help or "")
  end
  return table.concat(lines, "\n")
end

local ENV_HELP = [[
The API key comes from TASKAPI_API_KEY, or the provider's own TRIPO_API_KEY / SELLERPIC_API_KEY.
Exit codes: 0 all succeeded, 1 a task failed, 2 usage or local file error, 3 API or network
error, 4 timeout, 5 a task is not finished yet (status, download).]]

local function usage_text()
  local lines = { "usage: taskapi <command> [options]", "", "commands:" }
  for _, name in ipairs(ORDER) do
    lines[#lines + 1] = "  " .. COMMANDS[name].usage
    lines[#lines + 1] = "      " .. COMMANDS[name].about
  end
  lines[#lines + 1] = "\noptions of every command:"
  lines[#lines + 1] = options_help(GLOBAL)
  lines[#lines + 1] = "\n" .. ENV_HELP
  lines[#lines + 1] = "`taskapi <command> --help` for a command's own options; `taskapi --version` for the version."
  return table.concat(lines, "\n") .. "\n"
end

local function command_help(name)
  local c = COMMANDS[name]
  if name == "fake" then return require("taskapi.fake.cli").USAGE .. "\n" end
  local s = "usage: taskapi " .. c.usage .. "\n\n" .. c.about .. "\n"
  if c.opts then s = s .. "\noptions:\n" .. options_help(c.opts) .. "\n" end
  if not c.raw then s = s .. "\noptions of every command:\n" .. options_help(GLOBAL) .. "\n\n" .. ENV_HELP .. "\n" end
  return s
end

-- Edit distance (insert, delete, substitute, swap two neighbours) of two short words.
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

--- The candidate nearest to word (a prefix of it, or at most 2 edits away, 1 for short
--- words), or nil.
local function nearest(word, candidates)
  if type(word) ~= "string" or #word > 64 then return nil end
  local best, best_d
  for _, c in ipairs(candidates) do
    local d = (#word >= 2 and c:sub(1, #word) == word) and 0.5 or distance(word:lower(), c)
    if d <= (#c <= 4 and 1 or 2) and (not best_d or d < best_d) then best, best_d = c, d end
  end
  return best
end
M.nearest = nearest

--- Parses args (after the command name) against the command's and the global options.
--- Returns opts, positional or nil, message.
local function parse(cmd, args)
  local spec = with(GLOBAL, cmd.opts)
  local o, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a == "-h" then
      o.help = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local s = spec[name]
      if not s then
        local names = {}
        for k in pairs(spec) do names[#names + 1] = k end
        table.sort(names)
        local near = nearest(name, names)
        return nil, "unknown option --" .. name .. (near and "; did you mean --" .. near .. "?" or "")
      end
      if s.arg then
        if value == nil then
          i = i + 1
          value = args[i]
          if value == nil then return nil, "--" .. name .. " needs a value (" .. s.arg .. ")" end
        end
        if s.number then
          local n = tonumber(value)
          if not n or n ~= n or n < 0 or n == math.huge then return nil, "--" .. name .. " needs a number of seconds, got '" .. value .. "'" end
          value = n
        end
        if s.many then
          o[name] = o[name] or {}
          table.insert(o[name], value)
        else
          o[name] = value
        end
      else
        if value ~= nil then return nil, "--" .. name .. " takes no value" end
        o[name] = true
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  if o.help then return o, pos end
  for name, s in pairs(cmd.opts or {}) do
    if s.required and o[name] == nil then return nil, "--" .. name .. " is required" end
  end
  local wanted = cmd.usage:match("^%S+%s+([A-Z]+)")
  if cmd.min_args and #pos < cmd.min_args then return nil, "missing argument" .. (wanted and " " .. wanted or "") end
  if cmd.max_args and #pos > cmd.max_args then
    return nil, cmd.max_args == 0 and "takes no argument, got '" .. pos[1] .. "'" or
      "too many arguments (one " .. (wanted or "argument") .. ")"
  end
  return o, pos
end

local function make_client(o, env)
  local taskapi = require "taskapi"
  -- a name, in any case ("SellerPic"); on the command line never a definition table
  local provider = (o.provider or "tripo"):lower()
  local known = provider_names()
  local found = false
  for _, n in ipairs(known) do found = found or n == provider end
  if not found then
    local near = nearest(provider, known)
    return nil, require("taskapi.errors").new("invalid_argument", "--provider must be one of " ..
      table.concat(known, ", ") .. ", got '" .. o.provider:sub(1, 40) .. "'" .. (near and "; did you mean " .. near .. "?" or ""))
  end
  local def, derr = require("taskapi.api.provider").load(provider)
  if not def then return nil, derr end
  local key = o["api-key"]
  if key then
    io.stderr:write("taskapi: warning: --api-key lands in your shell history; prefer TASKAPI_API_KEY\n")
  else
    key = env("TASKAPI_API_KEY")
    if key == nil or key == "" then key = def.key_env and env(def.key_env) end
  end
  if key == nil or key == "" then
    return nil, require("taskapi.errors").new("invalid_argument",
      "no API key: set TASKAPI_API_KEY (or " .. tostring(def.key_env) .. ")")
  end
  return taskapi.new({ provider = provider, api_key = key, base_url = o["base-url"], region = o.region,
    min_interval = o["min-interval"], ledger = ledger_path(o, env) })
end

--- Runs the command line args (arg of the script); returns the exit code.
--- env: a getenv function (os.getenv by default; specs pass their own).
function M.main(args, env)
  args = args or {}
  env = env or os.getenv
  local name = args[1]
  if name == nil or name == "help" or name == "--help" or name == "-h" then
    io.stdout:write(usage_text())
    return name == nil and EXIT.usage or EXIT.ok
  end
  if name == "--version" or name == "version" then
    local core = require "taskapi.core"
    io.stdout:write(require("taskapi")._VERSION, " (", core.curl_version:match("^%S+") or "libcurl", ", ",
      jit and jit.version or _VERSION, ")\n")
    return EXIT.ok
  end
  local cmd = COMMANDS[name]
  if not cmd then
    local near = nearest(name, ORDER)
    io.stderr:write("taskapi: unknown command '", tostring(name):sub(1, 64), "'",
      near and "; did you mean '" .. near .. "'?" or "", "\nsee taskapi --help\n")
    return EXIT.usage
  end
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  if cmd.raw then
    if rest[1] == "--help" or rest[1] == "-h" or rest[1] == nil then
      io.stdout:write(command_help(name))
      return rest[1] and EXIT.ok or EXIT.usage
    end
    return cmd.run(nil, rest)
  end
  local o, pos = parse(cmd, rest)
  if not o then -- one line, and where the rest is
    io.stderr:write("taskapi ", name, ": ", pos, "\nsee taskapi ", name, " --help\n")
    return EXIT.usage
  end
  if o.help then
    io.stdout:write(command_help(name))
    return EXIT.ok
  end
  local ctx = setmetatable({ opts = o, code = EXIT.ok, live = new_live(io.stdout, not o.json and isatty()) }, Ctx)
  function ctx.usage(_, msg)
    io.stderr:write("taskapi ", name, ": ", msg, "\nsee taskapi ", name, " --help\n")
    ctx:outcome(EXIT.usage)
  end
  ctx.env = env
  local client, err
  if cmd.no_client then client = { close = function() end } else client, err = make_client(o, env) end
  if not client then
    if err.kind == "invalid_argument" then
      ctx:usage(err.message)
    else
      ctx:fail(err)
    end
    return ctx.code
  end
  ctx.client = client
  local ok, rerr = pcall(cmd.run, ctx, pos, o)
  client:close()
  if not ok then
    io.stderr:write("taskapi: internal error: ", tostring(rerr), "\n")
    return EXIT.api
  end
  return ctx.code
end

M.COMMANDS = COMMANDS
M.EXIT = EXIT
return M
