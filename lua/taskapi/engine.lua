-- taskapi.engine: where a transfer runs and how time passes, chosen once per call:
--   1. a client's own transport (the in-process fake), when it has one;
--   2. the coroutine scheduler, inside taskapi.run (all transfers on one multi handle);
--   3. nginx's event loop, inside OpenResty (see taskapi.ngx);
--   4. otherwise blocking, on the client's own multi handle.
-- Every coroutine.yield of the library lives in the scheduler or in taskapi.ngx, not here.
local M = {}

local core = require "taskapi.core"
local errors = require "taskapi.errors"

-- Set by taskapi.scheduler: returns the scheduler running the current coroutine, or nil.
M.current_scheduler = function() return nil end
-- Set by taskapi.ngx when loaded inside OpenResty: returns its engine, or nil when the
-- current phase cannot yield.
M.current_ngx = function() return nil end

function M.now(client)
  local t = client and client.transport
  if t and t.now then return t:now() end
  local n = M.current_ngx()
  if n then return n.now() end
  return core.now()
end

function M.sleep(client, seconds)
  if seconds ~= seconds or seconds <= 0 then return end
  local t = client and client.transport
  if t and t.sleep then return t:sleep(seconds) end
  local s = M.current_scheduler()
  if s then return s:sleep(seconds) end
  local n = M.current_ngx()
  if n then return n.sleep(seconds) end
  core.sleep(seconds)
end

-- Calls on_progress(done, total) of transfer t; an error it raises cancels t (no file
-- appears, its part file is removed) and is raised again.
local function report(t, on_progress, done, total)
  local ok, err = pcall(on_progress, done, total)
  if not ok then
    t:cancel()
    t:close()
    error(err, 0)
  end
end

-- Runs a transfer to its end on a multi handle, calling on_progress(done, total) from Lua
-- between steps (never from inside libcurl). A nested call made by on_progress (a status
-- read, say) runs on the same multi handle: a blocking request drives every transfer of it.
local collected = setmetatable({}, { __mode = "k" }) -- finished transfers a nested drive saw

local function drive(multi, req, on_progress)
  local t, err = multi:add(req)
  if not t then return nil, err end
  local last = -1
  while true do
    multi:perform()
    local finished = multi:completed()
    for i = 1, #finished do collected[finished[i]] = true end
    if collected[t] then -- finished: seen here, or by a drive nested in on_progress
      collected[t] = nil
      local done, total = t:progress()
      if done ~= last then report(t, on_progress, done, total) end
      local res, rerr = t:result()
      t:close()
      return res, rerr
    end
    local done, total = t:progress()
    if done ~= last then
      last = done
      report(t, on_progress, done, total)
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
  local s = M.current_scheduler()
  if s then return s:transfer(req, on_progress) end
  local n = M.current_ngx()
  if n then return n.transfer(req, on_progress) end
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
