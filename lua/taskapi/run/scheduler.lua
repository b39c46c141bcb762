-- taskapi.run.scheduler: coroutine concurrency for plain Lua, in one place. One scheduler runs a
-- set of coroutines; their timers sit in a binary heap and every HTTP transfer of every
-- coroutine runs on the scheduler's one libcurl multi handle. When nothing is ready the
-- process waits in poll() on the sockets libcurl asked to watch (or a plain sleep when no
-- transfer is open) until the next timer is due or a socket wakes it: no busy waiting. All
-- yields of the library are here (and in taskapi.run.ngx for OpenResty).
local core = require "taskapi.core"
local backend = require "taskapi.run.backend"
local errors = require "taskapi.errors"
local heap = require "taskapi.util.heap"
local drive_step = require("taskapi.run.drive").step

local M = {}
local S = {}
S.__index = S

local handle = require "taskapi.run.handle"
local pack, unpack = handle.pack, handle.unpack

-- coroutine -> scheduler, for the coroutines a scheduler runs (weak: finished ones go away).
local owner = setmetatable({}, { __mode = "k" })

local YIELD = {} -- the token our yields carry, so a user's own coroutine.yield is told apart
local KILL = {}  -- yielded by a coroutine that cancelled itself (or an ancestor): it ends there

-- The plain scheduler running the current coroutine, or nil.
local function plain()
  local co = coroutine.running()
  return co and owner[co] or nil
end
backend.register("plain", plain)

--- The scheduler calls should use here, in the backends' order: the plain one running this
--- coroutine, else inside OpenResty its light-thread scheduler (taskapi.run.ngx), else nil.
M.current = backend.scheduler

local Handle = {}
Handle.__index = Handle

-- Transfers in flight at once on one scheduler; more wait in a queue (as coroutines) before
-- any libcurl handle is made for them, so 10,000 waits cost 10,000 parked coroutines, not
-- 10,000 easy handles and connections.
M.MAX_TRANSFERS = 64

function M.new(opts)
  opts = opts or {}
  local s = setmetatable({
    multi = core.multi({ max_host_connections = opts.max_host_connections }),
    heap = heap.new(),                 -- timers: {at=, co=} (taskapi.util.heap)
    ready = {}, rvalue = {}, rhead = 1, rtail = 0, -- coroutines to resume, with the value to pass
    transfers = {},                    -- transfer -> {s=, co=, h=, t=, progress=bool, ...} (taskapi.run.drive's records)
    watchers = 0,                      -- transfers whose coroutine wants progress reports
    max_transfers = opts.max_transfers or M.MAX_TRANSFERS,
    inflight = 0,                      -- transfer slots taken
    slotq = {}, shead = 1, stail = 0,  -- handles waiting for a slot, in order
    live = 0,                          -- coroutines not finished
    handles = setmetatable({}, { __mode = "k" }),
  }, S)
  return s
end

--- An event a coroutine can wait for and another can signal (used by each_completed).
function S:event()
  local s, ev = self, { waiting = nil }
  function ev.wait()
    ev.waiting = coroutine.running()
    s:_park()
  end
  function ev.signal()
    local co = ev.waiting
    if co then
      ev.waiting = nil
      s:_wake(co, nil)
    end
  end
  return ev
end

-- Ready queue -----------------------------------------------------------------------------
function S:_wake(co, value)
  local n = self.rtail + 1
  self.rtail = n
  self.ready[n] = co
  self.rvalue[n] = value
end

-- Parks the running coroutine until something wakes it; returns the value it was woken with.
function S:_park()
  local v = coroutine.yield(YIELD)
  return v
end

-- Coroutines ------------------------------------------------------------------------------
local function finish(s, h, ok, ...)
  h.done = true
  while (h.slots or 0) > 0 do s:_release(h) end -- slots held to the end (error, cancel) go on
  s.live = s.live - 1
  local parent = h.parent
  if parent then
    h.parent = nil
    if parent.children then parent.children[h] = nil end
  end
  handle.settle(h, ok, ...)
  local j = h.joiners -- made by the first join
  if j then
    h.joiners = nil
    for i = 1, #j do s:_wake(j[i], true) end
  end
end

-- What coroutine.resume returned (no table per resume: most resumes end in another yield).
local function resumed(self, h, co, ok, ...)
  local first = ...
  if first == KILL and ok then
    -- it cancelled itself (S:cancel has cleaned up after it): it ends here, never resumed
    self.handles[co] = nil
    if coroutine.close then pcall(coroutine.close, co) end
    finish(self, h, false, errors.new("cancelled", "coroutine cancelled"))
  elseif coroutine.status(co) == "dead" then
    if ok then
      finish(self, h, true, ...)
    else
      local e = first
      local tb = debug.traceback(co, tostring(e))
      if type(e) == "string" then e = tb end
      finish(self, h, false, e)
    end
  elseif first ~= YIELD then
    -- A bare coroutine.yield from user code inside taskapi.run: treat it as "let others run".
    self:_wake(co, nil)
  end
end

function S:_resume(h, value)
  if h.done then return end
  local co = h.co
  if not h.started then -- the first resume passes spawn's arguments, exactly
    h.started = true
    local args = h.args
    h.args = nil
    if args then return resumed(self, h, co, coroutine.resume(co, unpack(args, 1, args.n))) end
    return resumed(self, h, co, coroutine.resume(co))
  end
  resumed(self, h, co, coroutine.resume(co, value))
end

function S:spawn(fn, ...)
  -- LuaJIT's coroutine.create takes Lua functions only: a C function gets a Lua wrapper
  local co = coroutine.create(debug.getinfo(fn, "S").what == "C" and function(...) return fn(...) end or fn)
  local h = setmetatable({ co = co, sched = self, done = false }, Handle)
  if select("#", ...) > 0 then h.args = pack(...) end
  -- the handle spawning it (when one of this scheduler's): cancelling that one cancels this
  local cur = coroutine.running()
  local parent = cur and self.handles[cur]
  if parent and not parent.done then
    h.parent = parent
    local ch = parent.children
    if not ch then
      ch = {}
      parent.children = ch
    end
    ch[h] = true
  end
  owner[co] = self
  self.handles[co] = h
  self.live = self.live + 1
  self:_wake(co, nil)
  return h
end

--- Blocks the running coroutine for `seconds`.
function S:sleep(seconds)
  local co = coroutine.running()
  heap.push(self.heap, { at = core.now() + seconds, co = co })
  self:_park()
end

-- Transfer slots: h.slots counts those the coroutine of handle h holds (more than one when a
-- progress callback makes a request of its own: that nested one never waits for a slot, so a
-- coroutine never waits for one it holds itself).
function S:_acquire(h)
  local held = h.slots or 0
  if held > 0 or self.inflight < self.max_transfers then
    self.inflight = self.inflight + 1
    h.slots = held + 1
    return
  end
  self.stail = self.stail + 1
  self.slotq[self.stail] = h
  h.granted = false
  repeat self:_park() until h.granted -- _release hands the slot over
  h.granted = nil
end

function S:_release(h)
  local held = h.slots or 0
  if held == 0 then return end
  h.slots = held - 1
  local q = self.slotq
  while self.shead <= self.stail do
    local nxt = q[self.shead]
    q[self.shead] = nil
    self.shead = self.shead + 1
    if not nxt.done then
      nxt.slots = (nxt.slots or 0) + 1
      nxt.granted = true
      self:_wake(nxt.co, "slot")
      return
    end
  end
  self.inflight = self.inflight - 1
end

-- Wakes the coroutine of transfer w when it is parked in that transfer's loop (not in a
-- request or a sleep its progress callback made), at most once per park.
local function nudge(s, w)
  if w.parked and not w.woken then
    w.woken = true
    s:_wake(w.co, w)
  end
end

-- The drive step's callbacks (taskapi.run.drive): a finished transfer wakes its coroutine; one
-- that moved bytes wakes it to report them, when it is parked in that transfer's loop and
-- has no report pending.
local function finished(_, w)
  local s = w.s
  if w.progress then s.watchers = s.watchers - 1 end
  w.finished = true
  nudge(s, w)
end

local function moved(_, w, done)
  if w.parked and not w.pending then
    w.last, w.pending = done, true
    nudge(w.s, w)
  end
end

-- Takes transfer w out of the scheduler for good: cancelled (no file, no part file), closed.
function S:_drop(w)
  local t = w.t
  if self.transfers[t] then
    self.transfers[t] = nil
    if w.progress then self.watchers = self.watchers - 1 end
  end
  if w.h.mine then w.h.mine[t] = nil end
  t:cancel()
  t:close()
end

--- Runs one transfer on the shared multi handle; returns res or nil, err. An error raised by
--- on_progress cancels the transfer (its part file removed) and is raised again here.
--- on_progress may itself make requests or sleep (they run as nested calls of this coroutine).
function S:transfer(req, on_progress)
  local co = coroutine.running()
  local h = self.handles[co]
  self:_acquire(h)
  local t, err = self.multi:add(req)
  if not t then
    self:_release(h)
    return nil, err
  end
  -- a record of 8 fields (a table of 8 hash slots, made for every API call): `last` (the
  -- byte count last reported) and `pending` only for a transfer that reports progress
  local w = { s = self, co = co, h = h, t = t, progress = on_progress ~= nil, parked = false, woken = false,
    finished = false }
  self.transfers[t] = w
  if on_progress then
    w.last = -1
    self.watchers = self.watchers + 1
  end
  local mine = h.mine -- every transfer in flight of this coroutine (nested ones too), for cancel
  if not mine then
    mine = {}
    h.mine = mine
  end
  mine[t] = w
  while not w.finished do
    w.parked = true
    self:_park()
    w.parked, w.woken = false, false
    if w.pending and not w.finished then
      w.pending = false
      local ok, cerr = pcall(on_progress, t:progress())
      if not ok then
        self:_drop(w)
        self:_release(h)
        error(cerr, 0)
      end
    end
  end
  mine[t] = nil
  local res, rerr = t:result()
  t:close()
  self:_release(h)
  return res, rerr
end

-- One turn of the loop: resume what is ready, collect finished transfers, fire due timers,
-- then sleep until the next event if nothing is ready.
function S:_turn()
  -- resume everything that is ready now (coroutines woken during this pass run next pass)
  local tail = self.rtail
  local ready, rvalue = self.ready, self.rvalue
  while self.rhead <= tail do
    local i = self.rhead
    local co, value = ready[i], rvalue[i]
    ready[i], rvalue[i] = nil, nil
    self.rhead = i + 1
    local h = self.handles[co]
    if h then self:_resume(h, value) end
  end
  if next(self.transfers) then
    drive_step(self.multi, self.transfers, finished, moved, self.watchers)
  end
  local now = core.now()
  local heap_ = self.heap
  while heap_[1] and heap_[1].at <= now do
    local item = heap.pop(heap_)
    if not item.cancelled then self:_wake(item.co, nil) end
  end
  if self.rhead <= self.rtail then return end
  -- nothing ready: sleep until the next timer or socket activity
  local wait = 1
  if heap_[1] then
    wait = heap_[1].at - now
    if wait < 0 then wait = 0 end
  elseif not next(self.transfers) then
    self.stuck = self.live > 0 -- nothing can wake the parked coroutines
    return
  end
  if next(self.transfers) then
    -- wake at least every 250 ms to report progress of downloads that asked for it
    self.multi:poll(wait > 0.25 and 0.25 or wait)
  elseif wait > 0 then
    core.sleep(wait)
  end
end

--- Runs the loop until done() is true or no coroutine is left.
function S:loop(done)
  while self.live > 0 do
    if done and done() then return end
    self:_turn()
    if self.stuck and self.live > 0 then
      self.stuck = nil
      error("taskapi.run: " .. self.live .. " coroutine(s) wait for each other and nothing can wake them", 0)
    end
  end
end

-- What a cancelled coroutine leaves: its transfers in flight (cancelled: no file appears, no
-- part file stays), its timers, and the cleanups registered with S:on_cancel.
function S:_cleanup(h)
  if h.mine then
    local list = {}
    for _, w in pairs(h.mine) do list[#list + 1] = w end
    for i = 1, #list do self:_drop(list[i]) end
  end
  local co = h.co
  for _, item in ipairs(self.heap) do
    if item.co == co then item.cancelled = true end
  end
  local fns = h.cleanups
  h.cleanups = nil
  if fns then for i = #fns, 1, -1 do pcall(fns[i]) end end
end

--- Cancels the coroutine of handle h and everything it spawned (at once: their transfers in
--- flight are cancelled, their timers dropped), deepest first; the coroutines a finished h
--- spawned that still run are cancelled too. A coroutine that cancels itself (or an
--- ancestor) ends at that call. Returns false when nothing was left to cancel.
function S:cancel(h)
  local me = coroutine.running()
  local mine -- the running coroutine's handle when it is in the tree: it ends last
  local any = false
  local function kill(x)
    if x.children then
      local list = {}
      for c in pairs(x.children) do list[#list + 1] = c end
      for i = 1, #list do kill(list[i]) end
    end
    if x.done then return end
    any = true
    if x.co == me then
      mine = x
      return
    end
    self:_cleanup(x)
    self.handles[x.co] = nil
    if coroutine.close then pcall(coroutine.close, x.co) end
    finish(self, x, false, errors.new("cancelled", "coroutine cancelled"))
  end
  kill(h)
  if mine then
    self:_cleanup(mine)
    coroutine.yield(KILL) -- resumed() ends it; never resumed
  end
  return any
end

--- Registers fn to run when the running coroutine is cancelled (not when it ends otherwise);
--- returns a function that unregisters it. Outside a coroutine of this scheduler: a no-op.
function S:on_cancel(fn)
  local co = coroutine.running()
  local h = co and self.handles[co]
  if not h then return function() end end
  local fns = h.cleanups
  if not fns then
    fns = {}
    h.cleanups = fns
  end
  fns[#fns + 1] = fn
  return function()
    local list = h.cleanups
    if not list then return end
    for i = #list, 1, -1 do
      if list[i] == fn then
        table.remove(list, i)
        return
      end
    end
  end
end

-- Handles ---------------------------------------------------------------------------------
--- Waits for the coroutine to finish; returns its results, or nil, err when it raised an
--- error or was cancelled (err.kind "runtime" or "cancelled").
function Handle:join()
  local s = self.sched
  while not self.done do
    if plain() == s then
      local j = self.joiners
      if not j then
        j = {}
        self.joiners = j
      end
      j[#j + 1] = coroutine.running()
      s:_park()
    else
      -- joined from outside its scheduler: drive that scheduler until the coroutine ends
      s:loop(function() return self.done end)
      if not self.done then break end
    end
  end
  return handle.outcome(self)
end

function Handle:cancel()
  return self.sched:cancel(self)
end

function Handle:status()
  if self.done then return self.err and (self.err.kind == "cancelled" and "cancelled" or "failed") or "finished" end
  return "running"
end

-- The public functions ------------------------------------------------------------------------
--- taskapi.run(fn, ...): runs fn in a new scheduler and returns its results once fn and every
--- coroutine spawned under it have finished. An error raised by fn is raised again here.
function M.run(fn, ...)
  if type(fn) ~= "function" then error("taskapi.run expects a function", 2) end
  local n = backend.active("ngx")
  if n then return n.sched:run(fn, ...) end
  local s = M.new()
  local h = s:spawn(fn, ...)
  s:loop()
  s.multi:close()
  if h.err then
    if h.err.kind == "runtime" then error(h.err.value ~= nil and h.err.value or h.err, 0) end
    error(h.err, 0)
  end
  return unpack(h.results, 1, h.results.n)
end

--- taskapi.spawn(fn, ...): starts fn as a coroutine of the running scheduler; returns a handle.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then return errors.invalid("taskapi.spawn expects a function") end
  local s = M.current()
  if not s then return errors.invalid("taskapi.spawn must be called inside taskapi.run") end
  return s:spawn(fn, ...)
end

--- taskapi.sleep(s): yields inside taskapi.run (or OpenResty), blocks elsewhere.
function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds == math.huge then
    return errors.invalid("taskapi.sleep expects a finite number of seconds >= 0")
  end
  backend.sleep(nil, seconds)
  return true
end

--- taskapi.gather(fns): runs every function concurrently; returns results[i] (fns[i]'s first
--- result) and errs[i] (its error: raised, or the second value of a `nil, err` return).
function M.gather(fns)
  if type(fns) ~= "table" then return errors.invalid("taskapi.gather expects an array of functions") end
  for i = 1, #fns do
    if type(fns[i]) ~= "function" then return errors.invalid("taskapi.gather: element " .. i .. " is not a function") end
  end
  local function body()
    local hs, results, errs = {}, {}, {}
    for i = 1, #fns do hs[i] = M.current():spawn(fns[i]) end
    for i = 1, #hs do
      local r, e = hs[i]:join()
      results[i] = r
      if r == nil and e ~= nil then errs[i] = e end
    end
    return results, errs
  end
  if M.current() then return body() end
  return M.run(body)
end

return M
