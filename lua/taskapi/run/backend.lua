-- taskapi.run.backend: where a transfer runs and how time passes, chosen once per call:
--   1. a client's own transport (the in-process fake), when it has one;
--   2. a registered backend running the current call: the coroutine scheduler inside
--      taskapi.run (all transfers on one multi handle), nginx's event loop inside OpenResty
--      (taskapi.run.ngx);
--   3. otherwise blocking, on the client's own multi handle.
-- Every coroutine.yield of the library lives in the scheduler or in taskapi.run.ngx, not here.
local M = {}

local core = require "taskapi.core"
local errors = require "taskapi.errors"
local drive_step = require("taskapi.run.drive").step

-- The backends, in the order they are asked: each registers itself when it loads
-- (taskapi.run.scheduler as "plain", taskapi.run.ngx as "ngx") with a function that returns the
-- backend running the current call, or nil. A backend has transfer(req, on_progress) and
-- sleep(seconds) methods, and may have now().
local names, currents = {}, {}

--- Registers backend `name` (again: replaces its function).
function M.register(name, current)
  for i = 1, #names do
    if names[i] == name then
      currents[i] = current
      return
    end
  end
  names[#names + 1], currents[#currents + 1] = name, current
end

--- The backend `name` running the current call, or nil (not loaded, or not running it).
function M.active(name)
  for i = 1, #names do
    if names[i] == name then return currents[i]() end
  end
  return nil
end

-- The first backend running the current call, or nil (outside every one: blocking).
local function backend()
  for i = 1, #currents do
    local b = currents[i]()
    if b then return b end
  end
  return nil
end

--- The scheduler of the first backend running the current call (a backend that is a
--- scheduler itself, or one that carries it as `sched`), or nil.
function M.scheduler()
  local b = backend()
  return b and (b.sched or b) or nil
end

function M.now(client)
  local t = client and client.transport
  if t and t.now then return t:now() end
  local b = backend()
  if b and b.now then return b:now() end
  return core.now()
end

function M.sleep(client, seconds)
  if seconds ~= seconds or seconds <= 0 then return end
  local t = client and client.transport
  if t and t.sleep then return t:sleep(seconds) end
  local b = backend()
  if b then return b:sleep(seconds) end
  core.sleep(seconds)
end

-- Runs a transfer to its end on a multi handle, calling on_progress(done, total) from Lua
-- between steps (never from inside libcurl). A nested call made by on_progress (a status
-- read, say) runs on the same multi handle: a blocking request drives every transfer of it,
-- and a transfer that finishes in a nested drive is marked in its record for its own.
-- An error on_progress raises cancels the transfer (no file appears, its part file is
-- removed) and is raised again.
local records_of = setmetatable({}, { __mode = "k" }) -- multi -> transfer -> record

local function mark_finished(_, rec) rec.finished = true end

local function drive(multi, req, on_progress)
  local t, err = multi:add(req)
  if not t then return nil, err end
  local records = records_of[multi]
  if not records then
    records = {}
    records_of[multi] = records
  end
  local rec = { last = -1 }
  records[t] = rec
  while true do
    drive_step(multi, records, mark_finished)
    local done, total = t:progress()
    if done ~= rec.last then
      rec.last = done
      local ok, perr = pcall(on_progress, done, total)
      if not ok then
        records[t] = nil
        t:cancel()
        t:close()
        error(perr, 0)
      end
    end
    if rec.finished then
      local res, rerr = t:result()
      t:close()
      return res, rerr
    end
    multi:poll(0.25)
  end
end

local function lower_scheme(url)
  return url:match("^(%a[%w+.-]*):") or ""
end

-- A URL that is not http(s): a server gave it (a result link, a presigned upload URL, a
-- redirect); the user's own are checked at taskapi.new. The error names the provider and
-- shows the URL without its query (it may carry a signature).
local function not_http(client, url)
  local shown = url:gsub("[?#].*$", ""):sub(1, 120)
  return errors.new("bad_response", (client.def and client.def.name or "server") ..
    ": the server gave a URL that is not http or https ('" .. shown .. "'; scheme '" ..
    lower_scheme(url):sub(1, 20):lower() .. "')")
end

local function dispatch(client, req, on_progress)
  local t = client.transport
  if t then return t:request(req, on_progress) end
  local b = backend()
  if b then return b:transfer(req, on_progress) end
  if on_progress then return drive(client.multi, req, on_progress) end
  return client.multi:request(req)
end

local CURLE_UNSUPPORTED_PROTOCOL = 1

--- Performs one transfer (API call or download) and returns res or nil, err. An error
--- raised by on_progress cancels the transfer and is raised again.
function M.request(client, req, on_progress)
  local url = req.url
  if type(url) == "string" and not url:find("^[Hh][Tt][Tt][Pp][Ss]?://") then
    return nil, not_http(client, url)
  end
  local res, err = dispatch(client, req, on_progress)
  if not res and type(err) == "table" and err.curl_code == CURLE_UNSUPPORTED_PROTOCOL then
    -- libcurl refused a redirect to another scheme: one that is not http(s) at all is the
    -- server's bad answer; https -> http stays the transport (TLS) refusal it is
    local scheme = tostring(err.message):match('[Pp]rotocol "([^"]*)"')
    scheme = scheme and scheme:lower()
    if scheme ~= "http" and scheme ~= "https" then
      err = errors.adopt(err)
      err.kind, err.retryable = "bad_response", false
      err.message = (client.def and client.def.name or "server") ..
        ": the server redirected to a URL that is not http or https (" .. tostring(err.message) .. ")"
    end
  end
  return res, err
end

return M
