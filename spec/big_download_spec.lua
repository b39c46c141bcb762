-- A 1 GiB result downloaded through the real C module from the nginx fake, in a child Lua
-- process of the runtime under test: its peak RSS stays under 32 MiB and the file's SHA-256
-- is the served file's. #big (left out of the valgrind run)
local fe = require "support.fake_env"

local GIB = 1024 * 1024 * 1024
local LUA = jit and "luajit" or "lua5.4"
local TAG = jit and "luajit" or "lua5.4"

describe("a 1 GiB download #big", function()
  local env, dir
  setup(function()
    env = fe.start()
    dir = fe.tmpdir()
  end)
  teardown(function()
    if env then env:stop() end
    if dir then fe.rmdir(dir) end
  end)

  it("streams to disk with a small, flat memory footprint and the right content", function()
    local id = env:add { provider = "tripo", queue = 0, run = 0.1, file_size = GIB, outputs = { "model" } }
    local script = table.concat({
      "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path",
      "package.cpath = './build/" .. TAG .. "/?.so;' .. package.cpath",
      "local taskapi = require 'taskapi'",
      "local c = assert(taskapi.new{ provider = 'tripo', api_key = '" .. fe.KEY .. "', base_url = '" .. env.base.tripo ..
        "', min_interval = 0 })",
      "local task = assert(c:wait('" .. id .. "', { interval = 0.1 }))",
      "local files = assert(c:download(task, { dir = '" .. dir .. "' }))",
      "local hwm = io.open('/proc/self/status'):read('*a'):match('VmHWM:%s*(%d+)')",
      "print(files[1].path, files[1].bytes, hwm)",
    }, "\n")
    local p = io.popen(LUA .. " -e " .. fe.q(script) .. " 2>&1")
    local out = p:read("*a")
    p:close()
    local path, bytes, hwm = out:match("(%S+)%s+(%d+)%s+(%d+)")
    assert.truthy(path, out)
    assert.are.equal(GIB, tonumber(bytes))
    local rss_mib = tonumber(hwm) / 1024
    io.stderr:write(string.format("\n1 GiB download (%s): peak RSS %.1f MiB\n", LUA, rss_mib))
    assert.is_true(rss_mib < 32, "peak RSS " .. rss_mib .. " MiB")
    -- the served file is the fake's, generated in its files folder
    local served = fe.sh("ls " .. fe.q(env.server.files_dir) .. "/" .. id .. "-model-* 2>/dev/null | head -n 1"):gsub("%s+$", "")
    assert.truthy(served ~= "", "served file not found")
    assert.are.equal(fe.sha256(served), fe.sha256(path))
  end)
end)
