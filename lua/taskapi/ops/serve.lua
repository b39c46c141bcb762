-- taskapi.ops.serve: client:serve(ledger, opts), one worker of a fleet. Every worker of the
-- fleet (processes, nginx workers, machines) shares one ledger on Redis and, beside it, the
-- provider's queues of taskapi.ops.claims: due polls and due downloads. A worker runs, on
-- the current scheduler (taskapi.run, or nginx light threads):
--   * pollers: each claims the due polls (up to the batch read's max where the provider has
--     one, Tripo V3's 100; else one), reads them (taskapi.ops.wait.poll_many: one batch
--     request, or one each), settles each answer with the polling policy of wait
--     (taskapi.ops.wait.settle) and puts the task back, due at its next poll but never
--     sooner than the provider's minimum interval after this one (Redis's clock); a
--     finalized task that succeeded goes to the download queue, any other is finished;
--   * downloaders: each claims one due download and saves the results the ledger has not
--     saved (taskapi.ledger.save_results: a part file left by a worker that died is resumed
--     with Range by the download code), renewing the lease as bytes come;
--   * a sweeper: every `sweep` seconds the worker holding the fleet's sweep lock reads the
--     ledger's pending tasks of the provider (made by any node) and queues those missing.
-- A claim is a lease: a worker that dies loses it after `lease` seconds and the task is
-- claimable again. A poll must be answered before claim + lease - min_interval - 0.25 s (else
-- it is not sent), so the next poll of anyone, after the lease, is still min_interval later.
-- Redis down: each loop waits (0.1 s doubling to 5 s) and tries again; a restarted Redis (its
-- AOF) is picked up by the next call.
local errors = require "taskapi.errors"
local backend = require "taskapi.run.backend"
local scheduler = require "taskapi.run.scheduler"
local claims = require "taskapi.ops.claims"
local waiting = require "taskapi.ops.wait"
local download = require "taskapi.ops.download"
local check = require "taskapi.api.check"
local ledger = require "taskapi.ledger"
local fs = require "taskapi.util.files"

local M = {}

M.LEASE = 30           -- seconds: the default lease (at least 2 x the minimum interval)
M.LEASE_MARGIN = 1.25  -- seconds: a lease is at least the minimum interval plus this
M.POLL_MARGIN = 0.25   -- seconds: a poll is answered by claim + lease - min_interval - this
M.MIN_POLL = 0.05      -- seconds: a poll with less time than this left is not sent
M.SWEEP = 2            -- seconds between sweeps of the ledger
M.IDLE = 0.5           -- seconds: the longest sleep of a poller with nothing due
M.IDLE_DOWNLOAD = 0.25 -- seconds: the same for a downloader
M.BACKOFF, M.MAX_BACKOFF = 0.1, 5 -- seconds: after a Redis failure, doubling up to the max
M.POLLERS = 4          -- coroutines claiming polls
M.CONCURRENCY = 4      -- coroutines claiming downloads
M.RETRY = 2            -- seconds before a failed download is tried again (doubling up to 60)
M.LEASE_GUARD = 0.5    -- seconds: a download stops this long before its lease ends unrenewed

local LEASE_LOST = {} -- raised by a download's on_progress: the transfer is cancelled

-- serve's own options (the others are wait's and download's, as in client:resume)
local RULES = {
  dir = true, lease = check.SECONDS, sweep = check.SECONDS, pollers = { "number", integer = true, min = 1, max = 64 },
  concurrency = { "number", integer = true, min = 1, max = 64 }, batch = { "number", integer = true, min = 1, max = 1000 },
  idle_exit = check.SECONDS, stop = check.FUNCTION, log = check.FUNCTION, worker = true, stats = { "table" },
}
local RENAMED = { download_timeout = "timeout", on_download_progress = "on_progress" }

-- Splits opts into serve's, wait's and download's; checks each.
local function check_opts(client, opts)
  if type(opts) ~= "table" then return errors.invalid("serve expects an options table with 'dir'") end
  if opts.dir == nil then return errors.invalid("serve: option 'dir' (the folder for the results) is required") end
  local own, wopts, dopts = {}, {}, {}
  for k, v in pairs(opts) do
    if RULES[k] then own[k] = v
    elseif RENAMED[k] then dopts[RENAMED[k]] = v
    elseif k ~= "timeout" and waiting.OPTIONS[k] then wopts[k] = v
    elseif download.OPTIONS[k] then dopts[k] = v
    else return errors.invalid("serve: unknown option '" .. tostring(k):sub(1, 40) .. "'") end
  end
  local s = { pollers = M.POLLERS, concurrency = M.CONCURRENCY, sweep = M.SWEEP }
  local ok, err = check.options(own, RULES, "serve ", s)
  if not ok then return nil, err end
  s.dir, s.stop, s.log, s.worker, s.stats = opts.dir, opts.stop, opts.log, opts.worker, opts.stats
  if s.worker ~= nil and (type(s.worker) ~= "string" or not s.worker:match("^[%w%.%-_]+$") or #s.worker > 100) then
    return errors.invalid("serve: option 'worker' must be a name of letters, digits, '.', '-' and '_'")
  end
  dopts.dir = opts.dir
  s.o, err = download.check_opts(client.def, dopts)
  if not s.o then return nil, err end
  s.dopts = dopts
  s.p, err = waiting.check_opts(client, wopts)
  if not s.p then return nil, err end
  s.p.timeout = math.huge -- the fleet polls a task until it is finalized
  local min = s.p.min_interval
  s.lease = s.lease or math.max(M.LEASE, 2 * min)
  if s.lease < min + M.LEASE_MARGIN then
    return errors.invalid(string.format("serve: option 'lease' must be at least the minimum interval + %.2f s (%.2f s)",
      M.LEASE_MARGIN, min + M.LEASE_MARGIN))
  end
  local b = client:_batch()
  s.batch = math.min(s.batch or (b and b.max or 1), b and b.max or 1)
  return s
end

--- What a worker keeps of the tasks it touches: one table per name in `names` (task id ->
--- value), and keep(id) to say it touched a task; forget() drops every entry of a task not
--- touched for `after` seconds (clock(): seconds). A task's next claim may be another
--- worker's, and then so is the rest of the task: without forget() a long-running worker
--- would keep a little of every task the fleet ever had. The sweeper calls it.
function M.memory(names, after, clock)
  local m, touched = {}, {}
  for _, n in ipairs(names) do m[n] = {} end
  function m.keep(id) touched[id] = clock() end
  function m.forget()
    local horizon = clock() - after
    for id, t in pairs(touched) do
      if t < horizon then
        for _, n in ipairs(names) do m[n][id] = nil end
        touched[id] = nil
      end
    end
  end
  return m
end

local function worker_name()
  local host = (fs.read("/proc/sys/kernel/hostname") or "host"):match("^[^\n]*")
  local pid = fs.pid()
  local n = rawget(_G, "ngx")
  if n and n.worker and n.worker.pid then pid = n.worker.pid() end
  return (host:gsub("[^%w%.%-_]", "_")) .. "-" .. pid .. "-" .. math.random(1, 1e9)
end

--- client:serve(ledger, opts): see the header and the README. Returns the worker's counts
--- once it stops (opts.stop() true, or the fleet idle for opts.idle_exit seconds), or nil,
--- err for bad arguments (a Redis that fails while serving is waited for, not returned).
function M.serve(client, L, opts)
  L = L or client.ledger
  if not ledger.is_ledger(L) or not L.prefix then
    return errors.invalid("serve: the fleet needs a ledger on Redis (taskapi.ledger.open('redis://...'))")
  end
  if not L.db then return errors.invalid("serve: the ledger is closed") end
  local s, err = check_opts(client, opts)
  if not s then return nil, err end
  local name = client.def.name
  local C = claims.new(L.db, L.prefix, name)
  C.worker = s.worker or worker_name()
  local p, min, lease = s.p, s.p.min_interval, s.lease
  -- the worker's counts: opts.stats when given (filled as it goes: a page can show them)
  local stats = s.stats or {}
  for _, k in ipairs({ "polls", "status_requests", "batch_reads", "finalized", "downloads", "files", "resumed",
    "redis_errors", "lost_leases", "swept", "given_up" }) do
    stats[k] = 0
  end
  stats.worker = C.worker
  -- What the client sees and saves is recorded in the fleet's ledger, through a view of it
  -- whose files_saved records a download's files only while this worker holds its lease
  -- (renewed at that moment, so no other worker can have claimed it): a worker whose lease
  -- ended while it was still downloading leaves its files unrecorded, for the worker that
  -- claimed the task next to find (and adopt) or to skip, so each result counts one save.
  local holding = {} -- task id -> function() -> true while this worker holds its download
  local view = setmetatable({}, { __index = L })
  function view.files_saved(_, task, files, adopted)
    local held = holding[task.id]
    if held and not held() then
      return nil, errors.new("download", "fleet: the download's lease is lost: its files are not recorded",
        { task_id = task.id })
    end
    return L:files_saved(task, files, adopted)
  end
  local saved_ledger = client.ledger
  client.ledger = view
  local stopped = false
  local function stopping()
    if not stopped and s.stop and s.stop() then stopped = true end
    return stopped
  end
  local function now() return backend.now(client) end
  local function sleep(t) backend.sleep(client, t) end
  local function say(msg) if s.log then s.log(msg) end end

  -- one loop's backoff after a Redis failure (reset by a success)
  local function failing()
    local b = { wait = 0 }
    function b.fail(e)
      stats.redis_errors = stats.redis_errors + 1
      b.wait = b.wait == 0 and M.BACKOFF or math.min(b.wait * 2, M.MAX_BACKOFF)
      say("fleet: " .. tostring(e and e.message or e) .. " (again in " .. b.wait .. " s)")
      sleep(b.wait)
    end
    function b.ok() b.wait = 0 end
    return b
  end
  local function lost(ok)
    if ok == false then stats.lost_leases = stats.lost_leases + 1 end
  end

  -- what this worker keeps of a task: its wait state here (the policy's memory of it), the
  -- finalized task a poller of this worker read, its failed downloads here
  local mem = M.memory({ "states", "finals", "retries" }, 2 * (p.max_interval + lease), now)
  local states, finals, retries, keep = mem.states, mem.finals, mem.retries, mem.keep

  local function poller()
    local b = failing()
    while not stopping() do
      local ids, token, nxt = C:claim("poll", s.batch, lease)
      if not ids then b.fail(token)
      else
        b.ok()
        if #ids == 0 then
          sleep(math.max(0.005, math.min((nxt or M.IDLE) + waiting.BATCH, M.IDLE)))
        else
          local t0 = now()
          local ws = {}
          for i, id in ipairs(ids) do
            local w = states[id] or waiting.start(client, id, p)
            states[id], ws[i] = w, w
            keep(id)
          end
          local function settled(w, what, v)
            stats.polls = stats.polls + 1
            if what == "again" then
              lost(C:release("poll", w.sid, token, v, min))
            else
              states[w.sid] = nil
              local outcome = "done"
              if what == "failed" then
                outcome = "failed"
                stats.given_up = stats.given_up + 1
                say("fleet: " .. name .. " " .. w.sid .. ": " .. tostring(v))
              else
                stats.finalized = stats.finalized + 1
                if v.ok and #v.outputs > 0 then
                  outcome = "download"
                  finals[w.sid] = v
                end
              end
              lost(C:finish("poll", w.sid, token, outcome))
            end
          end
          -- the answer must come before claim + lease - min - margin (this worker's clock,
          -- which started after Redis's claim)
          local cap = t0 + lease - min - M.POLL_MARGIN - now()
          local sent = cap >= M.MIN_POLL
          if sent then
            local batched = #ws > 1 and client:_batch()
            stats.status_requests = stats.status_requests + (batched and 1 or #ws)
            if batched then stats.batch_reads = stats.batch_reads + 1 end
            sent = waiting.poll_many(client, ws, #ws, settled, cap)
          end
          if not sent then -- not polled: due again after the minimum interval
            for _, w in ipairs(ws) do lost(C:release("poll", w.sid, token, 0, min)) end
          end
        end
      end
    end
  end

  local function downloader()
    local b = failing()
    while not stopping() do
      local ids, token, nxt = C:claim("download", 1, lease)
      if not ids then b.fail(token)
      elseif #ids == 0 then
        b.ok()
        sleep(math.max(0.005, math.min(nxt or M.IDLE_DOWNLOAD, M.IDLE_DOWNLOAD)))
      else
        b.ok()
        local id = ids[1]
        local task, gerr = finals[id]
        finals[id] = nil
        -- the task as this worker read it (its final state recorded first: idempotent), or
        -- as the ledger has it
        if task then
          local seen
          seen, gerr = L:task_seen(task)
          if seen == nil and gerr then task = nil end
        else
          task, gerr = L:get(id, name)
        end
        local files, derr
        if task and task.ok then
          -- the lease's end as this worker knows it (its clock started after Redis's claim):
          -- renewed every third of the lease as bytes come; the download stops before it ends
          -- unrenewed (Redis down, or the lease lost), so that no other worker that claims
          -- it then finds this one still at work
          local renewed, held = now(), now() + lease
          local d = {}
          for k, v in pairs(s.dopts) do d[k] = v end
          local user = d.on_progress
          d.on_progress = function(done, total, out)
            local t = now()
            if t - renewed >= lease / 3 then
              renewed = t
              local ok = C:renew("download", id, token, lease)
              if ok then held = t + lease end
              if ok == false then error(LEASE_LOST, 0) end
            end
            if t > held - M.LEASE_GUARD then error(LEASE_LOST, 0) end
            if user then user(done, total, out) end
          end
          stats.downloads = stats.downloads + 1
          holding[id] = function() return C:renew("download", id, token, lease) == true end
          local ok, a, e = pcall(ledger.save_results, client, task, s.o, d, nil)
          holding[id] = nil
          if ok then files, derr = a, e
          elseif a == LEASE_LOST then
            files, derr = {}, errors.new("download", "fleet: the download's lease ended before it did (stopped)", { task_id = id })
          else error(a, 0) end
        elseif task then
          files = {} -- finalized without results (the record says so)
        else
          derr = gerr or errors.new("not_found", "fleet: task " .. id .. " is not in the ledger", { task_id = id })
        end
        for _, f in ipairs(files or {}) do
          if not f.skipped and not f.adopted then stats.files = stats.files + 1 end
          if f.resumed then stats.resumed = stats.resumed + 1 end
        end
        if derr then
          retries[id] = (retries[id] or 0) + 1
          keep(id)
          say("fleet: " .. name .. " " .. id .. ": " .. tostring(derr))
          lost(C:release("download", id, token, math.min(60, M.RETRY * 2 ^ (retries[id] - 1)), 0))
        else
          retries[id] = nil
          lost(C:finish("download", id, token))
        end
      end
    end
  end

  local idle_since
  local function sweeper()
    local b = failing()
    while not stopping() do
      mem.forget()
      local ok, lerr = C:lock("sweep", 2 * s.sweep, C.worker)
      local recs
      if ok then
        recs, lerr = L:tasks { provider = name, pending = true }
        if not recs then ok = nil end
      end
      if recs then
        local polls, downloads = {}, {}
        for _, r in ipairs(recs) do
          if not r.done then polls[#polls + 1] = r.id
          elseif r.ok then downloads[#downloads + 1] = r.id end
        end
        local n
        n, lerr = C:enqueue(polls, downloads, min)
        if n then stats.swept = stats.swept + n end
        ok = n ~= nil
      end
      local sizes
      if ok ~= nil then sizes, lerr = C:sizes() end
      if not sizes then b.fail(lerr)
      else
        b.ok()
        if sizes.poll + sizes.poll_leased + sizes.download + sizes.download_leased > 0 then idle_since = nil
        elseif s.idle_exit then
          idle_since = idle_since or now()
          if now() - idle_since >= s.idle_exit then stopped = true end
        end
        local t = now()
        while not stopping() and now() - t < s.sweep do sleep(math.min(0.25, s.sweep)) end
      end
    end
  end

  local function body()
    local sch = scheduler.current()
    -- a loop that raises (a callback of the caller's) stops the others
    local function guarded(fn)
      return function()
        local ok, e = pcall(fn)
        if not ok then
          stopped = true
          error(e, 0)
        end
      end
    end
    local hs = { sch:spawn(guarded(sweeper)) }
    for _ = 1, s.pollers do hs[#hs + 1] = sch:spawn(guarded(poller)) end
    for _ = 1, s.concurrency do hs[#hs + 1] = sch:spawn(guarded(downloader)) end
    local failure
    for _, h in ipairs(hs) do
      local ok, jerr = h:join()
      if ok == nil and jerr and not failure then failure = jerr end
    end
    if failure then error(failure, 0) end
  end
  local ok, perr = pcall(function()
    if scheduler.current() then body() else scheduler.run(body) end
  end)
  client.ledger = saved_ledger
  if not ok then error(perr, 0) end
  return stats
end

return M
