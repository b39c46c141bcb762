-- Issue 3's check: 1,000 tasks awaited concurrently in one plain-Lua process against the
-- nginx fake, every result downloaded as its task finishes (inside taskapi.run: one
-- coroutine per task, wait then download). Wall time, peak RSS, requests made.
local L = require "bench.lib"

local TASKS = tonumber(os.getenv("BENCH_MANY_TASKS")) or 1000

local mode = ...
if mode == "child" then
  local _, url, n, dir = ...
  n = tonumber(n)
  math.randomseed(7)
  local ids = L.create_tasks(url, n, function()
    return { provider = "tripo", queue = math.random() * 5, run = 5 + math.random() * 10, file_size = 65536 }
  end)
  local taskapi = require "taskapi"
  local c = L.fake_client(url)
  local requests = L.count_requests()
  local t0 = L.now()
  local files, bytes, failed = 0, 0, 0
  taskapi.run(function()
    for _, id in ipairs(ids) do
      taskapi.spawn(function()
        local task, err = c:wait(id)
        local got = task and c:download(task, { dir = dir })
        if not got then failed = failed + 1; io.stderr:write(tostring(err), "\n") return end
        for _, f in ipairs(got) do files, bytes = files + 1, bytes + f.bytes end
      end)
    end
  end)
  L.emit { files = files, bytes = bytes, failed = failed, requests = requests(), wall = L.now() - t0,
    hwm = L.mem_kib("VmHWM") }
  return
end

local M = { name = "many" }

function M.run(env)
  local dir = L.sh1("mktemp -d /tmp/taskapi-bench.XXXXXX")
  local r = L.child("lua5.4", "many_tasks", { env.url, TASKS, dir })
  os.execute("rm -rf '" .. dir .. "'")
  assert(r.failed == 0 and r.files >= TASKS, "not every result downloaded")
  return {
    L.row("Issue 3: " .. L.fmt(TASKS) .. " tasks awaited concurrently, every result downloaded (Lua 5.4)",
      L.fmt(r.wall, 1) .. " s wall, peak RSS " .. L.fmt(r.hwm / 1024, 1) .. " MiB, " .. L.fmt(r.requests) ..
      " requests (" .. L.fmt(r.files) .. " files, " .. L.fmt(r.bytes / 1048576, 1) .. " MiB)",
      "none", "", "all complete", true),
  }
end

return M
