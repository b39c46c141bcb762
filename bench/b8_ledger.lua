-- B8: the ledger's cost on its two stores, Lua 5.4, in this process: a SQLite file (WAL,
-- synchronous full and normal) and Redis (a private redis-server on 127.0.0.1 with
-- appendonly yes, appendfsync everysec, through taskapi.core's hiredis binding). Each task
-- makes the writes a client makes for it: its intent and outcome, two changes of state, two
-- files saved (6 atomic writes); then `tasks{ pending = true }` over all of them (files
-- checked on disk) and `get` of each. Wall clock, alternating rounds, medians.
local L = require "bench.lib"
local ledger = require "taskapi.ledger"
local rs = require "spec.support.redis"

local TASKS = tonumber(os.getenv("BENCH_B8_TASKS")) or 1000
local ROUNDS = 3

local M = { name = "B8" }

local function play(target, opts, dir)
  local Lg = assert(ledger.open(target, opts))
  for _, n in ipairs({ "m.glb", "i.png" }) do
    local f = assert(io.open(dir .. "/" .. n, "wb"))
    f:write(string.rep("x", 4096))
    f:close()
  end
  local t0 = L.now()
  for i = 1, TASKS do
    local id = "task-" .. i
    local rid = assert(Lg:before_create("tripo", "text_to_model", "/generation/text-to-model", { prompt = "p" .. i }))
    assert(Lg:after_create(rid, "tripo", "text_to_model", id))
    local t = { id = id, provider = "tripo", state = "running", progress = 10, done = false, ok = false, outputs = {} }
    assert(Lg:task_seen(t))
    t.state, t.done, t.ok, t.progress = "succeeded", true, true, 100
    t.outputs = { { name = "model", url = "http://h/" .. i .. ".glb" }, { name = "image", url = "http://h/" .. i .. ".png" } }
    assert(Lg:task_seen(t))
    assert(Lg:files_saved(t, { { name = "model", path = dir .. "/m.glb" }, { name = "image", path = dir .. "/i.png" } }))
  end
  local writes = L.now() - t0
  t0 = L.now()
  local pending = assert(Lg:tasks { pending = true })
  local list = L.now() - t0
  assert(#pending == 0, "tasks pending: " .. #pending)
  t0 = L.now()
  for i = 1, TASKS do assert(Lg:get("task-" .. i, "tripo")) end
  local gets = L.now() - t0
  Lg:close()
  return { write_us = writes / (TASKS * 6) * 1e6, task_ms = writes / TASKS * 1e3, list_ms = list * 1e3,
    get_us = gets / TASKS * 1e6 }
end

function M.run()
  local srv = assert(rs.start { ttl = 900 })
  local dir = L.sh1("mktemp -d /tmp/taskapi-b8.XXXXXX")
  local n = 0
  local function sqlite(sync)
    return function()
      n = n + 1
      local r = play(dir .. "/l" .. n .. ".db", { synchronous = sync }, dir)
      os.execute("rm -f " .. dir .. "/l" .. n .. ".db*")
      return r
    end
  end
  local ok, med = pcall(L.alternate, ROUNDS, {
    { "redis", function() return play(srv.url(), nil, dir) end },
    { "full", sqlite("full") },
    { "normal", sqlite("normal") },
  })
  srv.stop()
  os.execute("rm -rf " .. dir)
  assert(ok, med)
  local function cell(m)
    return string.format("%.0f us/write (%.2f ms per task's 6 observer calls), tasks{pending} %.0f ms, get %.0f us",
      m.write_us, m.task_ms, m.list_ms, m.get_us)
  end
  return {
    L.row(string.format("B8 ledger on Redis (hiredis, AOF everysec), %s tasks: intent, outcome, 2 states, 2 files each; " ..
      "then tasks{pending} and get of each", L.fmt(TASKS)), cell(med.redis),
      "SQLite synchronous=full: " .. cell(med.full) .. "; synchronous=normal: " .. cell(med.normal),
      string.format("%.2f x full's write time", med.redis.write_us / med.full.write_us), "(information)"),
  }
end

return M
