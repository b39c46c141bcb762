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

local HERE = not jit and os.getenv("ASAN_OPTIONS") == nil and os.getenv("TASKAPI_MEMCHECK") == nil
local ledger = require "taskapi.ledger"
local taskapi = require "taskapi"

local MIN, LEASE, IDLE = fl.MIN, 3, 1

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

  local function alive(pid) return sh("kill -0 " .. pid .. " 2>/dev/null && echo y") == "y" end

  -- One run: n tasks of each provider, `workers` processes; at(whole files) -> an action
  -- (kill one worker, restart Redis) once that many results are saved. Returns its numbers.
  local function run(name, n, workers, event)
    local url = srv.url()
    local dir = root .. "/" .. name
    os.execute("mkdir -p " .. fe.q(dir))
    local mark = env:mark()
    local t_create = fe.now()
    local tasks, results = fl.create(env, url, n)
    local created = fe.now() - t_create
    local t0 = fe.now()
    local pids, outs = {}, {}
    for i = 1, workers do
      outs[i] = dir .. ".out" .. i
      pids[i] = tonumber(sh(table.concat({ "lua5.4 spec/support/fleet_child.lua", fe.q(url), fe.q(dir), fe.q(env.url),
        LEASE, MIN, IDLE, ">" .. fe.q(outs[i]), "2>" .. fe.q(outs[i] .. ".err"), "</dev/null & echo $!" }, " ")))
    end
    local numbers = { name = name, workers = workers .. " worker process(es)", created = created }
    local done_at = fl.watch(dir, results, event and function(parts) event.fire(pids, numbers, parts) end,
      event and event.at, function()
        for i = 1, workers do
          if pids[i] ~= nil and alive(pids[i]) then return true end
        end
        return false
      end)
    -- the workers end by themselves once the fleet is idle (IDLE seconds, seen at a sweep)
    for i = 1, workers do
      for _ = 1, 200 do
        if not (pids[i] and alive(pids[i])) then break end
        os.execute("sleep 0.05")
      end
      if pids[i] and alive(pids[i]) then os.execute("kill -9 " .. pids[i]) end
    end
    if not done_at then
      local errs = {}
      for i = 1, workers do errs[i] = (fe.read(outs[i] .. ".err") or ""):sub(-600) end
      error(name .. ": not every result was saved in 90 s (" .. fl.count_files(dir) .. " of " .. results .. "); workers said: " ..
        table.concat(errs, " | "))
    end
    numbers.wall = done_at - t0
    for i = 1, workers do
      if pids[i] then
        local line = fe.read(outs[i]) or ""
        assert(line:match("^{"), name .. ": worker " .. i .. " ended without its counts: " .. (fe.read(outs[i] .. ".err") or ""))
      end
    end

    fl.check(env, mark, url, tasks, results, dir, MIN, numbers)
    return numbers
  end

  it("three workers, one killed with kill -9 halfway: every result saved once; then one worker", function()
    local killed = run("three", 500, 3, { at = 0.5, fire = function(pids, numbers)
      os.execute("kill -9 " .. pids[1])
      local pid = pids[1]
      pids[1] = nil
      while alive(pid) do os.execute("sleep 0.01") end
      -- what the killed worker left: its part files (the others' are in flight)
      local _, parts = fl.count_files(root .. "/three")
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
        fake = { queue = 0, run = 0.5, file_size = fl.SIZE } })
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
