-- taskapi.ops.download: saving a task's outputs to disk. Picks the outputs, names each file
-- `<task id>_<output name>.<ext>` inside the destination folder (taskapi.ops.naming decides the
-- names; nothing a server says can change the folder), skips an output whose file already
-- exists (unless overwrite), resolves each output's link (the provider's def.link when it
-- has one: SellerPic's download-link call per result), and runs the streaming transfer of
-- the C module: a hidden part file, locked while written (a second download of the same
-- output gets an io error), renamed to the final name only when complete and never over an
-- existing file unless overwrite, resumed with Range after a dropped connection or from a
-- part file a killed process left, the link renewed once when the file host says it expired
-- (403/404). A total time limit (timeout) and an average-speed floor (min_speed) bound every
-- call. The API key is never sent to a file host. A failure removes the part file (unless
-- another download holds it).
local core = require "taskapi.core"
local backend = require "taskapi.run.backend"
local errors = require "taskapi.errors"
local http = require "taskapi.api.http"
local files = require "taskapi.util.files"
local naming = require "taskapi.ops.naming"
local check = require "taskapi.api.check"

local exists, is_dir = files.exists, files.is_dir

local M = {}

-- The speed floor by default: at least MIN_SPEED bytes/s on average over a file's transfer,
-- checked once MIN_SPEED_TIME seconds have passed (download{ min_speed =, min_speed_time = }).
M.MIN_SPEED = 1024
M.MIN_SPEED_TIME = 30

-- The options of a download and their rules (taskapi.api.check; `true`: checked below).
local RULES = {
  dir = true, outputs = true, format = true, uhd = check.BOOLEAN, overwrite = check.BOOLEAN,
  max_bytes = check.POSITIVE, on_progress = check.FUNCTION, timeout = check.SECONDS,
  min_speed = check.NON_NEGATIVE, min_speed_time = check.NON_NEGATIVE_SECONDS,
}

M.OPTIONS = RULES -- the names of download's options (ledger.resume takes them too)

--- Checks the download options before any request; returns the normalized options.
function M.check_opts(def, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then return errors.invalid("download options must be a table, got " .. type(opts)) end
  local ok, err = check.known(opts, RULES, "download ")
  if not ok then return nil, err end
  local o = {}
  ok, err = check.options(opts, RULES, "download ", o)
  if not ok then return nil, err end
  o.dir = opts.dir or "."
  if type(o.dir) ~= "string" or o.dir == "" then return errors.invalid("download option 'dir' must be a non-empty string") end
  if o.dir:find("%z") then return errors.invalid("download option 'dir' contains a NUL byte") end
  if #o.dir > 4096 then return errors.invalid("download option 'dir' is " .. #o.dir .. " bytes long (at most 4096)") end
  o.dir = o.dir:gsub("/+$", "")
  if o.dir == "" then o.dir = "/" end
  if opts.outputs ~= nil then
    local list = type(opts.outputs) == "string" and { opts.outputs } or opts.outputs
    if type(list) ~= "table" or #list == 0 then
      return errors.invalid("download option 'outputs' must be a name or a non-empty array of names")
    end
    o.outputs = {}
    for _, n in ipairs(list) do
      if type(n) ~= "string" and type(n) ~= "number" then return errors.invalid("download option 'outputs' holds a " .. type(n)) end
      if type(n) == "number" and (n ~= n or n < 0 or n % 1 ~= 0 or n >= 2 ^ 63) then
        return errors.invalid("download option 'outputs' holds the number " .. tostring(n) .. " (not a whole id)")
      end
      if type(n) == "string" and (n == "" or #n > 256) then
        return errors.invalid("download option 'outputs' holds a name of " .. #n .. " bytes (1 to 256)")
      end
      o.outputs[#o.outputs + 1] = type(n) == "number" and string.format("%d", n) or n
    end
  end
  if opts.format ~= nil then
    if not def.formats then return errors.invalid("download option 'format' is not supported by " .. def.name) end
    if type(opts.format) ~= "string" or not def.formats[opts.format] then
      local names = {}
      for k in pairs(def.formats) do names[#names + 1] = k end
      table.sort(names)
      return errors.invalid("download option 'format' must be one of " .. table.concat(names, ", "))
    end
  end
  o.format = opts.format or def.default_format
  o.overwrite = o.overwrite == true
  o.timeout = o.timeout or 0
  o.min_speed = o.min_speed or M.MIN_SPEED
  o.min_speed_time = o.min_speed_time or M.MIN_SPEED_TIME
  -- newuser: a missing folder is made with its parents (mkdir -p), last, so that a refused
  -- option makes nothing; a file in the way or no permission is an io error before any request
  if not is_dir(o.dir) then
    local msg = files.sh("mkdir -p -- " .. files.quote(o.dir) .. " 2>&1")
    if not is_dir(o.dir) then
      return nil, errors.new("io", "download folder '" .. o.dir:sub(1, 200) .. "' cannot be made" ..
        (msg and msg ~= "" and ": " .. msg:gsub("^mkdir: ", ""):sub(1, 300) or ""))
    end
  end
  return o
end

-- The outputs to save, in the task's order, filtered by opts.outputs (every name must exist).
local function pick(task, o)
  if not o.outputs then return task.outputs end
  local by = {}
  for _, out in ipairs(task.outputs) do by[out.name] = out end
  local list = {}
  for _, n in ipairs(o.outputs) do
    if not by[n] then
      local have = {}
      for _, out in ipairs(task.outputs) do have[#have + 1] = out.name end
      return errors.invalid("task " .. task.id .. " has no output '" .. n .. "' (it has: " ..
        (#have > 0 and table.concat(have, ", ") or "none") .. ")", { task_id = task.id })
    end
    list[#list + 1] = by[n]
  end
  return list
end

-- The link of an output: the provider's own (def.link(call, task, out, opts), e.g. a
-- download-link endpoint; call(method, path, vars) is an API call of this client), else the
-- URL the task gave.
local function resolve(client, task, out, o)
  local link = client.def.link
  if link then
    return link(function(method, path, vars) return http.call(client, method, path, vars, nil, task.id) end, task, out, o)
  end
  if not out.url then return nil, errors.new("bad_response", "output '" .. out.name .. "' has no URL", { task_id = task.id }) end
  return out.url
end

-- A fresh link after the file host refused the old one: the provider's link again (it is
-- made anew each time), else the task read again.
local function refresh(client, task, out, o)
  if client.def.link then return resolve(client, task, out, o) end
  local fresh, err = client:status(task.id)
  if not fresh then return nil, err end
  for _, f in ipairs(fresh.outputs) do
    if f.name == out.name then return f.url end
  end
  return nil, errors.new("download", "output '" .. out.name .. "' is gone after refreshing the task", { task_id = task.id })
end

local names = naming.names

-- The result of an output whose file was already there (overwrite = false): left alone.
local function skipped(out, path)
  return { name = out.name, path = path, bytes = files.size(path), kind = out.kind, skipped = true }
end

local function now(client) return backend.now(client) end

-- The error of a call past its total limit (download{ timeout = }).
local function late(o, out, task)
  return errors.new("timeout", "output '" .. out.name .. "': download not finished within timeout = " ..
    tostring(o.timeout) .. " s", { task_id = task.id, retryable = false })
end

-- Saves one output; returns {name=, path=, bytes=, content_type=} ({..., skipped = true}
-- for a file that exists) or nil, err. deadline: backend time the call must end by, or nil.
local function save(client, task, out, o, deadline)
  local ext = naming.ext_of(client.def, out, o)
  local final, part, staging = names(o, task, out, ext)
  if final and not o.overwrite and exists(final) then return skipped(out, final) end
  if deadline and now(client) >= deadline then return nil, late(o, out, task) end
  local url, err = resolve(client, task, out, o)
  if not url then return nil, err end
  local req = http.request(client, {
    -- the part file left by a killed run is resumed (the transfer holds its lock; a 416 or a
    -- Content-Range that does not continue it starts it over)
    url = url, path = final or staging, part = part, resume = true,
    overwrite = o.overwrite or not final, -- a staging file is ours to replace (a crash's leftover)
    keep_partial = true, max_bytes = o.max_bytes,
    min_speed = o.min_speed, min_speed_time = o.min_speed_time,
    timeout = deadline and math.max(0.001, deadline - now(client)) or 0,
  })
  local on_progress
  if o.on_progress then
    local cb, name = o.on_progress, out.name
    on_progress = function(done, total) cb(done, total, name) end
  end
  local ctx = { task_id = task.id, on_progress = on_progress }
  local out_of_time = false
  if deadline then
    -- each attempt gets the time left; no retry that would start past the deadline
    ctx.before_retry = function(_, _, delay)
      local left = deadline - now(client) - delay
      if left < 0.001 then
        out_of_time = true
        return false
      end
      req.timeout = left
    end
  end
  local function decide(r)
    if r.status >= 200 and r.status < 300 then return r end
    if r.status == 403 or r.status == 404 or r.status == 410 then return r end -- renewed below
    local retryable = r.status == 429 or r.status >= 500
    return nil, errors.new("download", "file host answered HTTP " .. r.status,
      { status = r.status, retryable = retryable, retry_after = r.retry_after, task_id = task.id })
  end
  local res, derr = http.with_retries(client, req, decide, ctx)
  if res and res.status >= 300 then
    -- The link expired (or never was valid): renew it once and start again.
    local fresh
    fresh, derr = refresh(client, task, out, o)
    res = nil
    if fresh then
      req.url = fresh
      if deadline then req.timeout = math.max(0.001, deadline - now(client)) end
      res, derr = http.with_retries(client, req, decide, ctx)
      if res and res.status >= 300 then
        res, derr = nil, errors.new("download", "file host answered HTTP " .. res.status .. " after the link was renewed",
          { status = res.status, task_id = task.id })
      end
    end
  end
  if not res then
    core.remove_part(part) -- only when no other download holds it
    -- another download of the same output finished first: its file stands, ours is not needed
    if final and not o.overwrite and derr.kind == "io" and exists(final) and
        tostring(derr.message):find("exists: not replaced", 1, true) then
      return skipped(out, final)
    end
    if deadline and (out_of_time or now(client) >= deadline - 0.01) and derr.retryable ~= false then
      derr = late(o, out, task)
    elseif derr.kind == "download" or derr.kind == "io" or derr.kind == "timeout" or derr.kind == "transport" then
      derr.message = "output '" .. out.name .. "': " .. tostring(derr.message)
    end
    return nil, derr
  end
  local ctype = res.content_type
  if not final then
    ext = naming.ext_of_type(ctype)
    final = names(o, task, out, ext)
    local ok, perr = core.place(staging, final, o.overwrite)
    if not ok then
      os.remove(staging)
      if not o.overwrite and exists(final) then return skipped(out, final) end
      perr.task_id = task.id
      return nil, perr
    end
  end
  return { name = out.name, path = final, bytes = res.bytes, content_type = ctype, kind = out.kind,
    server_name = res.filename, resumed = res.resumed or nil }
end

--- Saves the outputs of a finished task. Returns the array of saved files (an existing file
--- is not replaced unless overwrite: its entry says skipped = true), or nil, err (files saved
--- before the failure stay, complete; err.files lists them).
function M.run(client, task, o)
  if not task.done then
    return nil, errors.new("invalid_argument", "task " .. task.id .. " is not finished (state " .. tostring(task.state) .. ")",
      { task_id = task.id })
  end
  if not task.ok then
    return nil, errors.new("task_failed", "task " .. task.id .. " ended " .. tostring(task.state) ..
      (type(task.error) == "table" and type(task.error.message) == "string" and ": " .. task.error.message or ""),
      { task_id = task.id, code = type(task.error) == "table" and task.error.code or nil })
  end
  local outs, err = pick(task, o)
  if not outs then return nil, err end
  local deadline = o.timeout > 0 and now(client) + o.timeout or nil
  local saved = {}
  for _, out in ipairs(outs) do
    local f, ferr = save(client, task, out, o, deadline)
    if not f then
      ferr.files = saved
      return nil, ferr
    end
    saved[#saved + 1] = f
  end
  return saved
end

return M
