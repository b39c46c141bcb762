-- taskapi.engine: where a transfer runs and how time passes, chosen once per call:
--   1. a client's own transport (the in-process fake), when it has one;
--   2. the coroutine scheduler, inside taskapi.run (all transfers on one multi handle);
--   3. nginx's event loop, inside OpenResty (see taskapi.ngx);
--   4. otherwise blocking, on the client's own multi handle.
-- Every coroutine.yield of the library lives in the scheduler or in taskapi.ngx, not here.
local M = {}

local core = require "taskapi.core"

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

-- Runs a transfer to its end on a multi handle, calling on_progress(done, total) from Lua
-- between steps (never from inside libcurl).
local function drive(multi, req, on_progress)
  local t, err = multi:add(req)
  if not t then return nil, err end
  local last = -1
  while true do
    multi:perform()
    local finished = multi:completed()
    for i = 1, #finished do
      if finished[i] == t then
        local done, total = t:progress()
        if done ~= last then on_progress(done, total) end
        local res, rerr = t:result()
        t:close()
        return res, rerr
      end
    end
    local done, total = t:progress()
    if done ~= last then
      last = done
      on_progress(done, total)
    end
    multi:poll(0.25)
  end
end

--- Performs one transfer (API call or download) and returns res or nil, err.
function M.request(client, req, on_progress)
  local t = client.transport
  if t then return t:request(req, on_progress) end
  local s = M.current_scheduler()
  if s then return s:transfer(req, on_progress) end
  local n = M.current_ngx()
  if n then return n.transfer(req, on_progress) end
  if on_progress then return drive(client.multi, req, on_progress) end
  return client.multi:request(req)
end

return M
