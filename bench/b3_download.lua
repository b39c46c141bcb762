-- B3: download of a 1 GiB result to disk (nginx's static module serves a pre-generated file):
-- client:download in a child process (MB/s, peak RSS from /usr/bin/time) against curl -o.
local L = require "bench.lib"

local MIB = tonumber(os.getenv("BENCH_B3_MIB")) or 1024
local ROUNDS = 3

local mode = ...
if mode == "child" then
  local _, url, dir = ...
  local c = L.static_client(url)
  local task = { id = "big", provider = "tripo", state = "succeeded", done = true, ok = true,
    outputs = { { name = "model", url = url .. "/static/files/big.glb", kind = "model" } } }
  local files = assert(c:download(task, { dir = dir, overwrite = true }))
  L.emit { bytes = files[1].bytes, hwm_kib = L.mem_kib("VmHWM") }
  return
end

local M = { name = "B3" }

function M.run(env)
  local url = env.url
  local src = env.files_dir .. "/static"
  os.execute("mkdir -p '" .. src .. "'")
  assert(os.execute("head -c " .. MIB .. "M /dev/urandom > '" .. src .. "/big.glb'"))
  local out = L.sh1("mktemp -d /tmp/taskapi-bench.XXXXXX")
  local bytes = MIB * 1048576
  local function clean() os.execute("rm -f '" .. out .. "'/big* '" .. out .. "'/.big*") end
  local med = L.alternate(ROUNDS, {
    { "curl", function()
      local wall, rss = L.timed("curl -s -o '" .. out .. "/big.glb' " .. url .. "/static/files/big.glb")
      clean()
      return { mbs = bytes / 1e6 / wall, rss = rss }
    end },
    { "taskapi", function()
      local r
      local wall, rss = L.timed("lua5.4 bench/b3_download.lua child " .. url .. " '" .. out ..
        "' > '" .. out .. "/result'")
      local f = assert(io.open(out .. "/result"))
      r = L.result(f:read("*a"), "b3 child")
      f:close()
      assert(r.bytes == bytes, "short download")
      clean()
      return { mbs = bytes / 1e6 / wall, rss = rss, hwm = r.hwm_kib }
    end },
  })
  os.execute("rm -rf '" .. out .. "' '" .. src .. "/big.glb'")
  local t, c = med.taskapi, med.curl
  local size = MIB == 1024 and "1 GiB" or MIB .. " MiB"
  return {
    L.row("B3 download of a " .. size .. " result to disk", L.fmt(t.mbs) .. " MB/s, peak RSS " ..
      L.fmt(t.rss / 1024, 1) .. " MiB", "curl -o " .. L.fmt(c.mbs) .. " MB/s, peak RSS " .. L.fmt(c.rss / 1024, 1) .. " MiB",
      L.fmt(t.mbs / c.mbs, 2) .. " x curl", ">= 1.0 x curl, RSS <= 16 MiB",
      t.mbs / c.mbs >= 1.0 and t.rss <= 16 * 1024),
  }
end

return M
