-- taskapi.run.ngx: the backend inside OpenResty. API calls (JSON answers in memory) go over nginx's
-- own sockets (taskapi.run.cosocket): no timer, no polling, each call yields only on its socket.
-- Downloads to disk (req.path) and uploads (req.mime, req.body_file) stay on libcurl: one multi
-- handle per nginx worker, driven by a background light thread (ngx.timer) that runs only
-- while such a transfer is in flight, calls perform (never blocking) and sleeps with ngx.sleep
-- between turns; each of those requests parks on an ngx.semaphore until its transfer is done.
-- Sleeps are ngx.sleep. Phases that cannot yield get a clear error instead.
local core = require "taskapi.core"
local cosocket = require "taskapi.run.cosocket"
local backend = require "taskapi.run.backend"
local errors = require "taskapi.errors"
local drive_step = require("taskapi.run.drive").step
local semaphore = require "ngx.semaphore"

local handle = require "taskapi.run.handle"
local pack, unpack = handle.pack, handle.unpack

local M = {}

local YIELDABLE = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, preread = true,
}

local multi        -- the worker's multi handle, made on first use
local waiting = {} -- transfer -> {sema=, progress=fn}: each holds one of the slots
local driving = false
M.MIN_SLEEP, M.MAX_SLEEP = 0.001, 0.02

-- Transfers on libcurl in flight at once in this worker, as taskapi.run.scheduler caps them;
-- more wait for a slot before any libcurl handle is made. A slot is given back when its
-- transfer leaves `waiting` (by the driver when it finishes, so a transfer of a light
-- thread that was killed gives it back too).
M.MAX_TRANSFERS = 64
local slots, slots_max -- an ngx.semaphore of MAX_TRANSFERS resources, made on first use
-- (and again when MAX_TRANSFERS changed while no transfer held one)

local function forget(t)
  if waiting[t] then
    waiting[t] = nil
    slots:post(1)
  end
end

-- The drive step's callbacks (taskapi.run.drive). A finished transfer wakes its request. One
-- that moved bytes calls its on_progress (in the driver's light thread, under pcall): an
-- error it raises cancels the transfer at once (no file appears, its part file is removed)
-- and is raised again by the request.
local function finished(_, w)
  slots:post(1) -- drive.step took the transfer out of waiting
  w.sema:post(1)
end

local function moved(t, w, done, total)
  w.last = done
  local ok, err = pcall(w.progress, done, total)
  if not ok then
    w.progress_err = err
    forget(t)
    t:cancel()
    w.sema:post(1)
  end
end

local function drive(premature)
  if premature then return end
  local pause = M.MIN_SLEEP
  while next(waiting) do
    local nfinished, nmoved = drive_step(multi, waiting, finished, moved)
    local busy = nfinished + nmoved > 0
    -- back off from 1 ms to 20 ms while nothing happens; at once back to 1 ms on activity
    pause = busy and M.MIN_SLEEP or math.min(pause * 2, M.MAX_SLEEP)
    ngx.sleep(pause)
  end
  driving = false
end

local function ensure_driver()
  if driving then return true end
  local ok, err = ngx.timer.at(0, drive)
  if not ok then return nil, err end
  driving = true
  return true
end

local function phase_error(what)
  return errors.new("invalid_argument", "taskapi cannot " .. what .. " in nginx's '" .. ngx.get_phase() ..
    "' phase: it cannot yield (use a content handler or ngx.timer.at)")
end

local cosocket_request = cosocket.request

function M.transfer(req, on_progress)
  if not YIELDABLE[ngx.get_phase()] then return nil, phase_error("make a request") end
  if req.json and not req.path and not req.mime and not req.body_file and not on_progress then
    return cosocket_request(req)
  end
  if not multi then multi = core.multi() end
  if slots_max ~= M.MAX_TRANSFERS and next(waiting) == nil then
    slots, slots_max = semaphore.new(M.MAX_TRANSFERS), M.MAX_TRANSFERS
  end
  -- the transfer's own timeouts end it; the extra margin only guards against a lost driver
  local limit = (req.timeout and req.timeout > 0) and req.timeout + 30 or 86400
  local slot, serr = slots:wait(limit)
  if not slot then
    return nil, errors.new("timeout", "no transfer slot within " .. limit .. " s: " .. tostring(serr), { retryable = true })
  end
  local t, err = multi:add(req)
  if not t then
    slots:post(1)
    return nil, err
  end
  local w = { sema = semaphore.new(0), progress = on_progress, last = -1 }
  waiting[t] = w
  local ok, derr = ensure_driver()
  if not ok then
    forget(t)
    t:cancel()
    t:close()
    return nil, errors.new("transport", "cannot start the transfer driver: " .. tostring(derr))
  end
  local got, werr = w.sema:wait(limit)
  if not got then
    forget(t)
    t:cancel()
    t:close()
    return nil, errors.new("timeout", "transfer not finished: " .. tostring(werr), { retryable = true })
  end
  if w.progress_err then
    t:close()
    error(w.progress_err, 0)
  end
  local res, rerr = t:result()
  t:close()
  return res, rerr
end

function M.sleep(seconds)
  if not YIELDABLE[ngx.get_phase()] then error(tostring(phase_error("sleep")), 2) end
  ngx.sleep(seconds)
end

function M.now()
  ngx.update_time()
  return ngx.now()
end

--- Whether the libcurl driver (the timer of downloads and uploads) is running now.
function M.driving() return driving end

-- The scheduler inside OpenResty: coroutines are nginx light threads (ngx.thread), joins and
-- events are semaphores, sleeps are ngx.sleep, transfers go through the worker's driver.
local Sched = {}
Sched.__index = Sched
M.sched = setmetatable({}, Sched)

local Handle = {}
Handle.__index = Handle

local function track(h)
  local ok, ctx = pcall(function() return ngx.ctx end)
  local list = ok and ctx and ctx.taskapi_threads
  if list then list[#list + 1] = h end
end

function Sched:spawn(fn, ...)
  local h = setmetatable({ done = false, sema = semaphore.new(0), waiters = 0 }, Handle)
  local function body(...)
    handle.settle(h, pcall(fn, ...))
    if h.waiters > 0 then h.sema:post(h.waiters) end
  end
  local th, err = ngx.thread.spawn(body, ...)
  if not th then error("taskapi: cannot spawn a light thread: " .. tostring(err), 2) end
  h.thread = th
  track(h)
  return h
end

function Handle:join()
  while not self.done do
    self.waiters = self.waiters + 1
    self.sema:wait(86400)
    self.waiters = self.waiters - 1
  end
  return handle.outcome(self)
end

function Handle:cancel()
  if self.done then return false end
  local ok = ngx.thread.kill(self.thread)
  if not ok then return false end
  self.done = true
  self.err = errors.new("cancelled", "light thread cancelled")
  if self.waiters > 0 then self.sema:post(self.waiters) end
  return true
end

function Sched:sleep(seconds) M.sleep(seconds) end
function Sched:transfer(req, on_progress) return M.transfer(req, on_progress) end

function Sched:event()
  local sema = semaphore.new(0)
  return { wait = function() sema:wait(86400) end, signal = function() sema:post(1) end }
end

-- taskapi.run inside nginx: runs fn in the current light thread, then waits for every light
-- thread spawned under it.
function Sched:run(fn, ...)
  local ctx = ngx.ctx
  local saved = ctx.taskapi_threads
  local list = {}
  ctx.taskapi_threads = list
  local r = pack(pcall(fn, ...))
  local i = 1
  while list[i] do
    list[i]:join()
    i = i + 1
  end
  ctx.taskapi_threads = saved
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

-- As a backend of taskapi.run.backend: the methods it calls, on this module's functions.
local as_backend = {
  now = function() return M.now() end,
  sleep = function(_, seconds) return M.sleep(seconds) end,
  transfer = function(_, req, on_progress) return M.transfer(req, on_progress) end,
  sched = M.sched,
}
backend.register("ngx", function() return as_backend end)

return M
