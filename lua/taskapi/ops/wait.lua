-- taskapi.ops.wait: the polling policy, in one place. `next_delay` decides when to look again
-- from what the provider said (ETA, queue position) or, lacking that, by exponential backoff
-- with jitter; `wait` runs the loop for one task: first poll at once, never faster than the
-- provider's minimum interval, never past the deadline, transient failures survived until
-- the deadline, permanent ones returned at once.
local core = require "taskapi.core"
local backend = require "taskapi.run.backend"
local errors = require "taskapi.errors"
local provider = require "taskapi.api.provider"
local heap = require "taskapi.util.heap"
local check = require "taskapi.api.check"
local webhook = require "taskapi.webhook" -- [webhook] deliveries end sleeps early (webhook.hook)

local M = {}

M.DEFAULT_TIMEOUT = 900      -- seconds: generation tasks take minutes, not hours
M.DEFAULT_INTERVAL = 2       -- seconds: the first backoff step
M.DEFAULT_MAX_INTERVAL = 30  -- seconds: the longest sleep without news
M.ETA_FACTOR = 0.6           -- look again after this share of the time a task has left
M.ETA_FLOOR = 0.5            -- seconds: the shortest look-again time an ETA can ask for
M.ETA_GRACE = 0.25           -- when a look before the expected end would leave less than the
                             -- minimum interval, one look this long after the end instead
M.QUEUE_STEP = 0.5           -- share of `interval` per queue position ahead, until the queue's
                             -- own pace is seen

-- The time a task has left: its reported ETA, the pace of its progress since the last poll
-- (progress points over the last delay), or both averaged. nil when neither is known.
local function time_left(task, state)
  local prev, pd, pace = state.nd_progress, state.nd_delay, nil
  if task.progress and prev and pd and task.progress > prev then
    pace = (100 - task.progress) * pd / (task.progress - prev)
  end
  if task.eta and pace then return (task.eta + pace) / 2 end -- two noisy estimates beat one
  return task.eta or pace
end

--- The delay before the next poll. state: {polls=, misses=} of this wait (next_delay keeps
--- its own nd_* fields there); p: the policy {interval=, max_interval=, min_interval=};
--- rnd: a function giving [0,1) (math.random).
function M.next_delay(task, state, p, rnd)
  local d
  local left = task and task.state == "running" and time_left(task, state)
  if left then
    d = left * M.ETA_FACTOR
    if left - d < p.min_interval + M.ETA_GRACE then d = left + M.ETA_GRACE end
    if d < M.ETA_FLOOR then d = M.ETA_FLOOR end
  elseif task and task.state == "queued" and task.queue_position then
    -- until the front of the queue, at the pace the position has been dropping
    local step, prev, pd = p.interval * M.QUEUE_STEP, state.nd_position, state.nd_delay
    if prev and pd and task.queue_position < prev then step = pd / (prev - task.queue_position) end
    d = p.interval + task.queue_position * step
  else
    local k = state.misses or 0
    d = p.interval * 2 ^ k
    d = d * (0.75 + 0.5 * rnd())
  end
  if d > p.max_interval then d = p.max_interval end
  if d < p.min_interval then d = p.min_interval end
  state.nd_progress = task and task.progress
  state.nd_position = task and task.queue_position
  state.nd_delay = d
  return d
end

-- The options of a wait and their rules (taskapi.api.check).
local RULES = {
  timeout = check.SECONDS, interval = check.NON_NEGATIVE_SECONDS, max_interval = check.NON_NEGATIVE_SECONDS,
  min_interval = check.NON_NEGATIVE_SECONDS, on_progress = check.FUNCTION,
}

M.OPTIONS = RULES -- the names of wait's options (ledger.resume takes them too)

local function check_opts(client, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then return errors.invalid("wait options must be a table, got " .. type(opts)) end
  local ok, err = check.known(opts, RULES, "wait ")
  if not ok then return nil, err end
  local p = {
    timeout = M.DEFAULT_TIMEOUT, interval = M.DEFAULT_INTERVAL, max_interval = M.DEFAULT_MAX_INTERVAL,
    min_interval = client.min_interval,
  }
  ok, err = check.options(opts, RULES, "wait ", p)
  if not ok then return nil, err end
  if p.interval < p.min_interval then p.interval = p.min_interval end
  if p.max_interval < p.interval then p.max_interval = p.interval end
  return p
end
M.check_opts = check_opts

-- What a wait keeps of the last task it saw (w.last): not the task (a table of 16 hash
-- slots with its outputs and trace id, on top of the payload) but a record of 6 array slots,
-- updated in place at each poll: the four fields a change is told by, and the payload and
-- trace id the task is rebuilt from when an error carries it (last_task). A waiting task
-- costs about 1.3 KiB instead of 1.7.
local STATE, PROGRESS, QUEUE, ETA, RAW, TRACE = 1, 2, 3, 4, 5, 6

local function changed(a, b)
  return not a or a[STATE] ~= b.state or a[PROGRESS] ~= b.progress or a[QUEUE] ~= b.queue_position
    or a[ETA] ~= b.eta
end

local function keep(w, task)
  local r = w.last
  if not r then
    w.last = { task.state, task.progress, task.queue_position, task.eta, task.raw, task.trace_id }
    return
  end
  r[STATE], r[PROGRESS], r[QUEUE], r[ETA], r[RAW], r[TRACE] =
    task.state, task.progress, task.queue_position, task.eta, task.raw, task.trace_id
end

-- The last task wait w saw, normalized again from its payload (the same table a poll made:
-- provider.task is a function of the payload, id and trace id), or nil.
local function last_task(w)
  local r = w.last
  if not r then return nil end
  return (provider.task(w.client.def, r[RAW], w.sid, r[TRACE], core.null))
end
M.last_task = last_task

--- Polls task `id` until it is finalized; see the README for the options.
function M.wait(client, id, opts)
  local sid, err = provider.check_id(client.def, id)
  if not sid then return nil, err end
  local p
  p, err = check_opts(client, opts)
  if not p then return nil, err end
  return M.wait_checked(client, sid, p)
end

-- One wait is a small state machine: start() makes its state, step() polls once and says
-- what comes next. M.wait_checked runs one in a loop; M.wait_many runs many on a few
-- coroutines. Both share every rule below.
function M.start(client, sid, p)
  return { client = client, sid = sid, p = p, deadline = backend.now(client) + p.timeout, polls = 0, misses = 0, at = 0 }
end

M.MIN_REQUEST = 0.002 -- seconds: the shortest time a poll's request is given (the C module's floor)

-- The error of a wait whose deadline came.
local function expired(w)
  local last = last_task(w)
  return errors.new("timeout", "task " .. w.sid .. " not finished after " .. w.p.timeout .. " s" ..
    (last and " (last state " .. last.state .. ")" or "") ..
    (w.last_err and "; last error: " .. tostring(w.last_err.message) or ""),
    { task_id = w.sid, task = last, retryable = true, polls = w.polls })
end

--- The time a poll's request of wait w may take: what is left before its deadline (at
--- least M.MIN_REQUEST, for the last look at the deadline); nil when the deadline has
--- passed before a last look.
function M.request_time(w, now)
  local left = w.deadline - now
  if left >= M.MIN_REQUEST then return left end
  if w.final or w.polls == 0 then return M.MIN_REQUEST end
  return nil
end

--- Polls once. Returns "done", task | "failed", err | "again", seconds until the next poll.
--- cap: the time the request may take (nil: what is left before the wait's deadline).
function M.step(w, cap)
  if w.expired then return "failed", w.expired end
  local t0 = backend.now(w.client)
  cap = cap or M.request_time(w, t0)
  if not cap then
    w.expired = expired(w)
    return "failed", w.expired
  end
  -- one request per poll (transient failures are retried on this loop's own schedule), never
  -- running past the deadline
  local task, perr = w.client:_status(w.sid, 0, cap)
  if task then w.rtt = backend.now(w.client) - t0 end
  return M.settle(w, task, perr)
end

--- What one poll's answer (task, or nil and perr) means for wait w, whether the poll was a
--- request of its own (step) or a share of a batch (wait_many): the one place that decides
--- the next poll. Returns what step returns.
function M.settle(w, task, perr)
  local client, p = w.client, w.p
  w.polls, w.polled = w.polls + 1, backend.now(client)
  local delay
  local last = w.last
  if task then
    if p.on_progress and changed(last, task) then p.on_progress(task) end
    if task.done then return "done", task end
    if last and not changed(last, task) then w.misses = w.misses + 1 else w.misses = 0 end
    keep(w, task)
    w.last_err = nil
    delay = M.next_delay(task, w, p, math.random)
  else
    if not perr.retryable then return "failed", perr end
    w.last_err = perr
    w.misses = w.misses + 1
    delay = M.next_delay(nil, w, p, math.random)
    if perr.retry_after and perr.retry_after > delay then delay = perr.retry_after end
  end
  local now, deadline = backend.now(client), w.deadline
  if now + delay > deadline then
    -- The next look would come after the deadline: take one last look, timed to end by the
    -- deadline (it starts the last poll's round trip before it), when the minimum interval
    -- allows it, else give up at the deadline. Never sleep past it.
    local at = deadline - (w.rtt and w.rtt < deadline - now and w.rtt or 0)
    local final = not w.final and at - now >= p.min_interval - (now - w.polled)
      and not (perr and perr.retry_after and now + perr.retry_after > deadline)
    if not final then w.expired = expired(w) end
    w.final = true
    delay = (final and at or deadline) - now
    if delay < 0 then delay = 0 end
  end
  return "again", delay
end

--- The loop of M.wait for a checked id and checked options (check_opts' table, which it
--- never changes: wait_all shares one among all its tasks).
function M.wait_checked(client, sid, p)
  local w = M.start(client, sid, p)
  local hook = webhook.hook(client):watch(w) -- [webhook] a delivery for sid ends the sleep
  local s = backend.active("plain")
  local forget = s and s:on_cancel(function() hook:close() end) -- [webhook] closed on cancel too
  while true do
    local what, v = M.step(w)
    if what ~= "again" then
      hook:close()
      if forget then forget() end
      if what == "done" then return v end
      return nil, v
    end
    hook:sleep(v) -- [webhook] backend.sleep(client, v), ended at once by a delivery
  end
end

M.WORKERS = 64 -- coroutines polling for wait_many, however many tasks it awaits
M.BATCH = 0.05 -- seconds a due poll may wait for the ones due just after it, so that many
               -- waits share one wake-up of the process (polls are delayed, never advanced)

-- A whole batch's failure as the error of one of its tasks (each its own table: task_id
-- names the task, and each_completed or the caller may change it).
local function share_of(err, sid)
  local e = errors.new(err.kind, err.message, err)
  e.task_id = sid
  return e
end

--- The polls of waits ws[1..n] (all due, none expired) in one request where the client reads
--- many at once (client:_batch()), else one request each (M.step); each answer is settled as
--- its own poll would be (M.settle) and handed to settled(w, what, v). cap: the time a request
--- may take (nil: never past the earliest deadline of the waits). Returns true, or false when
--- the batch endpoint proved missing (then nothing was settled: the polls are still due).
--- wait_many and the fleet's workers (taskapi.ops.serve) poll through it.
function M.poll_many(client, ws, n, settled, cap)
  if n <= 1 or not client:_batch() then
    for i = 1, n do settled(ws[i], M.step(ws[i], cap)) end
    return true
  end
  local sids = {}
  -- retried on each task's own schedule; never past the earliest deadline of the group
  local t0 = backend.now(client)
  if not cap then
    cap = math.huge
    for i = 1, n do cap = math.min(cap, M.request_time(ws[i], t0) or M.MIN_REQUEST) end
  end
  for i = 1, n do sids[i] = ws[i].sid end
  local tasks, errs = client:_status_many(sids, 0, cap)
  local rtt = backend.now(client) - t0
  if not tasks and not client:_batch() then return false end
  for i = 1, n do
    local w = ws[i]
    if tasks then
      if tasks[w.sid] then w.rtt = rtt end
      settled(w, M.settle(w, tasks[w.sid], errs[w.sid]))
    else settled(w, M.settle(w, nil, share_of(errs, w.sid))) end
  end
  return true
end

--- Waits for many checked ids inside a running scheduler `s`: a heap of wait states (each
--- its own heap entry, ordered by `at`, its next poll) served by at most M.WORKERS coroutines
--- (a waiting task costs its state, not a coroutine). One worker sleeps until the earliest
--- poll is due (plus M.BATCH when others wait, so that polls due close together go out
--- together); the others park on an event until there is work, so a due poll wakes one
--- coroutine, not all of them. Where the provider reads many tasks in one request
--- (client:_batch()), a worker takes every due poll, up to the batch's max, into one request
--- (client:_status_many); each task's answer is then settled as its own poll would be
--- (M.settle). Calls on_done(sid, task, err) as each one ends; returns when all have.
function M.wait_many(client, s, list, p, on_done)
  local queue, left = heap.new(), #list
  for _, sid in ipairs(list) do heap.push(queue, M.start(client, sid, p)) end
  local window = #list > 1 and M.BATCH or 0
  local idle, nidle = {}, 0 -- events of parked workers (a stack)
  local watch = math.huge   -- when the worker sleeping on the earliest poll wakes (none: huge)
  local function wake_one()
    if nidle > 0 then
      local ev = idle[nidle]
      idle[nidle], nidle = nil, nidle - 1
      ev.signal()
    end
  end
  -- [webhook] a delivery for a task moves its next poll to now, ends the sleep, wakes a worker
  local hook = webhook.hook(client, queue, wake_one)
  for i = 1, #queue do hook:watch(queue[i]) end
  -- [/webhook]
  -- After a poll of w: its next poll into the heap, or its end.
  local function settled(w, what, v)
    if what == "again" then
      w.at = backend.now(client) + v
      heap.push(queue, w)
    else
      left = left - 1
      if what == "done" then on_done(w.sid, v, nil) else on_done(w.sid, nil, v) end
    end
  end
  -- The polls of group[1..n] (all due) in one request.
  local function poll_group(group, n)
    local live, m = {}, 0
    for i = 1, n do
      local w = group[i]
      if w.expired then settled(w, "failed", w.expired)
      else
        m = m + 1
        live[m] = w
      end
    end
    if not M.poll_many(client, live, m, settled) then
      -- the batch endpoint is missing after all (the client now knows it): these polls,
      -- still due, go back to the heap and out one request each
      for i = 1, m do heap.push(queue, live[i]) end
    end
  end
  local broken = false -- a worker raised (an on_progress or on_done of the caller's): all end
  local failure         -- the first error a worker raised, raised again by wait_many
  local hs = {}
  local function work()
    local ev = s:event()
    -- a worker parks while others still have polls in flight (their tasks come back to the
    -- heap), and ends once every wait has
    while left > 0 and not broken do
      local now = backend.now(client)
      local at = queue[1] and queue[1].at or math.huge
      if at <= now then
        local b = client:_batch()
        local w, group, n
        if b then
          group, n = {}, 0
          repeat
            n = n + 1
            group[n] = heap.pop(queue)
          until n >= b.max or not queue[1] or queue[1].at > now
        else
          w = heap.pop(queue)
        end
        -- more work due, or nobody watching the next poll: hand it to a parked worker
        if queue[1] and (queue[1].at <= now or queue[1].at < watch) then wake_one() end
        if group then poll_group(group, n) else settled(w, M.step(w)) end
      elseif at < watch then
        watch = at
        local wake, deadline = at + window, queue[1].deadline
        if wake > deadline and deadline > now then wake = deadline end
        hook:sleep(wake - now) -- [webhook] backend.sleep, ended at once by a delivery
        if watch == at then watch = math.huge end
      else
        nidle = nidle + 1
        idle[nidle] = ev
        ev.wait()
      end
    end
    wake_one() -- nothing left to wait for: let the parked workers end too, one after another
  end
  local function worker(me)
    local ok, err = pcall(work)
    if not ok and not broken then
      -- the first failure ends the whole wait at once: the other workers are cancelled
      -- (their requests in flight too) and wait_many raises this error
      broken, failure = true, err
      for i = 1, #hs do
        if i ~= me then hs[i]:cancel() end
      end
      wake_one() -- where a cancel cannot reach (OpenResty), parked workers end one by one
    end
  end
  local forget = s.on_cancel and s:on_cancel(function() hook:close() end) -- [webhook] on cancel too
  for i = 1, math.min(M.WORKERS, #list) do hs[i] = s:spawn(worker, i) end
  for i = 1, #hs do hs[i]:join() end
  hook:close() -- [webhook]
  if forget then forget() end
  if failure ~= nil then error(failure, 0) end
  return left == 0
end

return M
