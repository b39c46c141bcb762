-- The fleet #fleet (issue 16): worker processes (spec/support/fleet_child.lua: client:serve for
-- Tripo V3 and SellerPic, the real C module, hiredis, real HTTP) share one ledger on a
-- private redis-server and wait for the tasks the spec created on the nginx fake:
--   * 1,000 tasks (500 of each provider), three workers, one killed with kill -9 once half of
--     the results are saved; then the same with one worker, for comparison;
--   * 200 tasks, two workers, Redis stopped for about 2 s in the middle and started again.
-- Every time: every task finalized, every result saved exactly once (saves = 1; the ledger's
-- SHA-256, the file's and that of the bytes the fake serves are one), no part file left, and,
-- from the fake's own log (spec/support/fleet_log.lua), no task read twice within the
-- minimum interval (lowered to 0.5 s; the lease is 3 s). The numbers go to the output.
-- Runs in the Lua 5.4 suite only (the pure-Lua layer is the same on LuaJIT; the processes
-- and the fake make it the slowest spec there is).
local fe = require "support.fake_env"
local rs = require "support.redis"
local fl = require "support.fleet_log"
local ledger = require "taskapi.ledger"
local taskapi = require "taskapi"
local core = require "taskapi.core"

local HERE = not jit and os.getenv("ASAN_OPTIONS") == nil and os.getenv("TASKAPI_MEMCHECK") == nil
local MIN, LEASE, IDLE = 0.5, 3, 1
local SIZE, BIG = 8000, 400000 -- bytes of a result; of the stalled ones (every 25th task)
local TOLERANCE = 0.02         -- seconds: the fake's clock is nginx's cached time
local PARAMS = {
  tripo = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a chair" },
  sellerpic = { type = "instructEdit", prompt = "white background" },
}

local function sh(cmd) return fe.sh(cmd) end

describe("a fleet of workers on one Redis #fleet", function()
  if not HERE then
    pending("runs in the Lua 5.4 suite only")
    return
  end
  local env, srv, root

  setup(function()
    env = fe.start { ttl = 300 }
    srv = assert(rs.start { ttl = 300 })
    root = fe.tmpdir()
  end)
  teardown(function()
    if env then env:stop() end
    if srv then srv.stop() end
    if root then fe.rmdir(root) end
  end)

  -- Creates n tasks of each provider through clients with the ledger at url; returns the
  -- tasks {id =, provider =, size =, run =} and the number of results expected.
  local function create(url, n)
    local L = assert(ledger.open(url))
    local tasks, results = {}, 0
    for _, p in ipairs({ "tripo", "sellerpic" }) do
      local c = assert(taskapi.new { provider = p, api_key = fe.KEY, base_url = env.base[p], ledger = L, min_interval = 0 })
      for i = 1, n do
        local params = {}
        for k, v in pairs(PARAMS[p]) do params[k] = v end
        params.prompt = params.prompt .. " " .. i
        local big = i % 25 == 0
        local run = 1.5 + (i % 6) * 0.5
        params.fake = { queue = 0, run = run, file_size = big and BIG or SIZE, faults = big and { stall = 1.5 } or nil }
        local id = assert(c:create(params))
        tasks[#tasks + 1] = { id = id, provider = p, size = big and BIG or SIZE, run = run }
        results = results + (p == "tripo" and 2 or 1)
      end
      c:close()
    end
    L:close()
    return tasks, results
  end

  local function count_files(dir)
    local whole, parts = 0, 0
    for _, name in ipairs(fe.ls(dir)) do
      if name:sub(1, 1) == "." then parts = parts + 1 else whole = whole + 1 end
    end
    return whole, parts
  end

  local function alive(pid) return sh("kill -0 " .. pid .. " 2>/dev/null && echo y") == "y" end

  -- One run: n tasks of each provider, `workers` processes; at(whole files) -> an action
  -- (kill one worker, restart Redis) once that many results are saved. Returns its numbers.
  local function run(name, n, workers, event)
    local url = srv.url()
    local dir = root .. "/" .. name
    os.execute("mkdir -p " .. fe.q(dir))
    local mark = env:mark()
    local t_create = fe.now()
    local tasks, results = create(url, n)
    local created = fe.now() - t_create
    local t0 = fe.now()
    local pids, outs = {}, {}
    for i = 1, workers do
      outs[i] = dir .. ".out" .. i
      pids[i] = tonumber(sh(table.concat({ "lua5.4 spec/support/fleet_child.lua", fe.q(url), fe.q(dir), fe.q(env.url),
        LEASE, MIN, IDLE, ">" .. fe.q(outs[i]), "2>" .. fe.q(outs[i] .. ".err"), "</dev/null & echo $!" }, " ")))
    end
    local numbers = { name = name, tasks = #tasks, workers = workers, created = created }
    local done_at, fired = nil, false
    while fe.now() - t0 < 90 do
      local whole, parts = count_files(dir)
      if not done_at and whole >= results then done_at = fe.now() end
      if event and not fired and whole >= event.at * results then
        fired = true
        event.fire(pids, numbers, parts)
      end
      local any = false
      for i = 1, workers do any = any or (pids[i] ~= nil and alive(pids[i])) end
      if not any then break end
      os.execute("sleep 0.05")
    end
    for i = 1, workers do
      if pids[i] and alive(pids[i]) then os.execute("kill -9 " .. pids[i]) end
    end
    if not done_at then
      local errs = {}
      for i = 1, workers do errs[i] = (fe.read(outs[i] .. ".err") or ""):sub(-600) end
      error(name .. ": not every result was saved in 90 s (" .. count_files(dir) .. " of " .. results .. "); workers said: " ..
        table.concat(errs, " | "))
    end
    numbers.wall = done_at - t0
    for i = 1, workers do
      if pids[i] then
        local line = fe.read(outs[i]) or ""
        assert(line:match("^{"), name .. ": worker " .. i .. " ended without its counts: " .. (fe.read(outs[i] .. ".err") or ""))
      end
    end

    -- the ledger: every task finalized, every result saved once, the served bytes
    local L = assert(ledger.open(url))
    local by_id = {}
    for _, t in ipairs(tasks) do by_id[t.provider .. " " .. t.id] = t end
    local recs = assert(L:tasks {})
    assert.equal(#tasks, #recs)
    local files = 0
    for _, r in ipairs(recs) do
      local t = assert(by_id[r.provider .. " " .. r.id], "a task the spec did not make: " .. r.id)
      assert.is_true(r.done and r.ok, name .. ": " .. r.id .. " not finished: " .. tostring(r.state))
      assert.same({}, r.unsaved, name .. ": " .. r.id .. " has unsaved results")
      for _, o in ipairs(r.outputs) do
        local f = r.files[o.name]
        assert.equal(1, f.saves, name .. ": " .. r.id .. " " .. o.name .. " saved " .. f.saves .. " times")
        local key = r.provider == "sellerpic" and o.name .. ".png" or o.name
        local want = core.sha256(fe.expected_bytes(r.id, key, t.size))
        assert.equal(want, f.sha256, name .. ": the ledger's SHA-256 of " .. f.path)
        assert.equal(want, core.sha256_file(f.path), name .. ": SHA-256 of " .. f.path)
        files = files + 1
      end
    end
    L:close()
    assert.equal(results, files)
    local whole, parts = count_files(dir)
    assert.equal(results, whole, name .. ": files on disk")
    assert.equal(0, parts, name .. ": part files left")

    -- the fake's log: never two reads of a task within the minimum interval
    local r = fl.parse(env:log(mark))
    local closest, who = fl.closest(r.polls)
    assert.is_true(closest >= MIN - TOLERANCE,
      string.format("%s: task %s read twice %.3f s apart (minimum %.1f s)", name, tostring(who), closest, MIN))
    local finals = {}
    for _, t in ipairs(tasks) do finals[t.id] = assert(r.created[t.id], "no create logged for " .. t.id) + t.run end
    numbers.closest = closest
    numbers.unseen = fl.longest_unseen(r.polls, finals, r.first)
    numbers.requests = r.status_requests / #tasks
    numbers.reads = r.reads / #tasks
    numbers.batch_reads = r.batch_reads
    numbers.ranged = r.ranged
    print(string.format("\nfleet %s: %d tasks, %d worker(s): %.1f s (creates %.1f s before); %.2f status requests " ..
      "and %.2f reads per task, %d batch reads; closest two reads of a task %.3f s; longest end -> seen %.2f s; " ..
      "file GETs with Range %d%s", name, numbers.tasks, workers, numbers.wall, created, numbers.requests, numbers.reads,
      numbers.batch_reads, closest, numbers.unseen, r.ranged, numbers.note or ""))
    return numbers
  end

  it("three workers, one killed with kill -9 halfway: every result saved once; then one worker", function()
    local killed = run("three", 500, 3, { at = 0.5, fire = function(pids, numbers)
      os.execute("kill -9 " .. pids[1])
      local pid = pids[1]
      pids[1] = nil
      while alive(pid) do os.execute("sleep 0.01") end
      -- what the killed worker left: its part files (the others' are in flight)
      local _, parts = count_files(root .. "/three")
      numbers.note = string.format("; part files right after the kill %d", parts)
    end })
    local one = run("one", 500, 1)
    assert.is_true(killed.unseen < 10 and one.unseen < 10)
  end)

  it("taskapi serve: exit 3 without Redis (the key never shown); one worker saves every result", function()
    local cli = "TASKAPI_API_KEY=" .. fe.KEY .. " lua5.4 bin/taskapi serve --provider tripo "
    local out = sh(cli .. "--ledger 'redis://127.0.0.1:1/0?prefix=none' --dir " .. fe.q(root .. "/none") ..
      " 2>&1; echo \"exit $?\"")
    assert.truthy(out:find("redis 127.0.0.1:1: connection refused", 1, true), out)
    assert.truthy(out:find("exit 3$"), out)
    assert.is_nil(out:find(fe.KEY, 1, true))
    local url = srv.url()
    local L = assert(ledger.open(url))
    local c = assert(taskapi.new { provider = "tripo", api_key = fe.KEY, base_url = env.base.tripo, ledger = L })
    for i = 1, 10 do
      assert(c:create { type = "text_to_model", model_version = "v3.1-20260211", prompt = "cli " .. i,
        fake = { queue = 0, run = 0.5, file_size = SIZE } })
    end
    c:close()
    out = sh(cli .. "--json --ledger " .. fe.q(url) .. " --base-url " .. fe.q(env.base.tripo) .. " --dir " ..
      fe.q(root .. "/cli") .. " --min-interval " .. MIN .. " --lease " .. LEASE .. " --idle-exit " .. IDLE .. " 2>&1; echo \"exit $?\"")
    assert.truthy(out:find("exit 0$"), out)
    assert.is_nil(out:find(fe.KEY, 1, true))
    local counts = require("cjson").decode(out:match("^[^\n]*"))
    assert.equal("worker", counts.object)
    assert.equal(10, counts.finalized)
    assert.equal(20, counts.files)
    assert.same({}, assert(L:tasks { pending = true }))
    L:close()
  end)

  it("Redis stopped for 2 s in the middle: nothing lost", function()
    local numbers = run("redis", 100, 2, { at = 0.3, fire = function()
      srv.halt()
      os.execute("sleep 2")
      srv.restart()
    end })
    assert.is_true(numbers.wall < 60)
  end)
end)
