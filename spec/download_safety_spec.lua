-- Files that cannot be corrupted (issue 12, part 3), through the real C module over real HTTP
-- against the nginx fake: two processes (and two coroutines) downloading the same output into
-- one folder, 20 rounds, end with one complete, correct file, the other told (an io error or a
-- skip), never a wrong success; a symlink planted at the part path is not followed; a part
-- file left by `kill -9` of a child mid-download is resumed with Range; a folder where some
-- outputs exist gets the missing ones; a host trickling 2 bytes/s ends with a timeout within
-- the limits (min_speed floor, total timeout, the defaults).
local fe = require "support.fake_env"
local naming = require "taskapi.ops.naming"

local SIZE = 100000
local RT = jit and "luajit" or "lua5.4"
local LUA = jit and "luajit" or "lua5.4"
local ROOT = fe.sh("pwd")
local q = fe.q

-- An nginx location that sends a 100000-byte "model" 2 bytes a second.
local TRICKLE = [[
    location = /noext/model {
      default_type model/gltf-binary;
      return 200 "glTF from a link without extension";
    }
    location /trickle/ {
      content_by_lua_block {
        ngx.header["Content-Type"] = "model/gltf-binary"
        ngx.header["Content-Length"] = "100000"
        ngx.send_headers()
        ngx.flush(true)
        for _ = 1, 50000 do
          if not ngx.print("ab") then return end
          if not ngx.flush(true) then return end
          ngx.sleep(1)
        end
      }
    }
]]

-- The child: downloads one output of one task and prints one line per result:
-- "ok <path> <bytes> <skipped> <resumed>" or "err <kind> <message>".
local CHILD = [[
local root, rt, provider, base, id, dir, name = ...
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. rt .. "/?.so;" .. package.cpath
local taskapi = require "taskapi"
local c = assert(taskapi.new { provider = provider, api_key = "test-key", base_url = base,
  min_interval = 0, backoff = 0.01, max_backoff = 0.05 })
local task = assert(c:status(id))
local files, err = c:download(task, { dir = dir, outputs = { name } })
if files then
  for _, f in ipairs(files) do
    io.write("ok ", f.path, " ", tostring(f.bytes), " ", tostring(f.skipped == true), " ",
      tostring(f.resumed == true), "\n")
  end
else
  io.write("err ", tostring(err.kind), " ", tostring(err), "\n")
end
]]

local function file_key(p, name)
  if p == "sellerpic" then return name .. ".png" end
  return name
end

local function parse(line)
  local path, bytes, sk, rs = line:match("^ok (%S+) (%d+) (%a+) (%a+)")
  if path then return { ok = true, path = path, bytes = tonumber(bytes), skipped = sk == "true", resumed = rs == "true" } end
  local kind, msg = line:match("^err (%S+) (.*)$")
  if kind then return { ok = false, kind = kind, message = msg } end
  return { ok = false, kind = "none", message = line }
end

describe("download safety", function()
  local env, dir, work

  setup(function()
    env = fe.start { locations = TRICKLE }
    work = fe.tmpdir()
    fe.write(work .. "/child.lua", CHILD)
  end)
  teardown(function()
    if env then env:stop() end
    fe.rmdir(work)
  end)
  before_each(function() dir = fe.tmpdir() end)
  after_each(function() fe.rmdir(dir) end)

  local function child_cmd(p, id, d, name)
    return LUA .. " " .. q(work .. "/child.lua") .. " " .. q(ROOT) .. " " .. RT .. " " .. p .. " " ..
      q(env.base[p]) .. " " .. q(id) .. " " .. q(d) .. " " .. q(name)
  end

  -- The name of output `name` and the bytes it must hold.
  local function output_of(c, id, p)
    local task = assert(c:status(id))
    assert.is_true(task.done)
    return task, task.outputs[1].name
  end

  it("two processes downloading one output into one folder: one complete file, the other an io error or a skip (20 rounds)", function()
    local tally = { ok = 0, skipped = 0, busy = 0 }
    local tasks = {}
    for _, p in ipairs({ "tripo", "sellerpic" }) do
      local c = env:client(p)
      for _, stall in ipairs({ 0.3, false }) do
        local id = env:add { provider = p, queue = 0, run = 0, file_size = SIZE, stall = stall or nil }
        local task, name = output_of(c, id, p)
        tasks[#tasks + 1] = { p = p, id = id, name = name, want = fe.expected_bytes(id, file_key(p, name), SIZE),
          final = naming.names({ dir = "D" }, task, task.outputs[1], p == "sellerpic" and "png" or "glb"):sub(3) }
      end
    end
    for round = 1, 20 do
      local t = tasks[(round - 1) % #tasks + 1]
      local d = fe.tmpdir()
      local o1, o2 = work .. "/out1", work .. "/out2"
      os.remove(o1)
      os.remove(o2)
      local cmd = child_cmd(t.p, t.id, d, t.name)
      fe.sh("(" .. cmd .. " >" .. o1 .. " 2>&1 & " .. cmd .. " >" .. o2 .. " 2>&1 & wait)")
      local r = { parse(fe.read(o1) or ""), parse(fe.read(o2) or "") }
      local wrote = 0
      for _, x in ipairs(r) do
        if x.ok and not x.skipped then
          wrote = wrote + 1
          tally.ok = tally.ok + 1
          assert.equal(SIZE, x.bytes)
        elseif x.ok then
          tally.skipped = tally.skipped + 1
          assert.equal(SIZE, x.bytes) -- the other's complete file
        else
          assert.equal("io", x.kind, "round " .. round .. ": " .. tostring(x.message))
          assert.truthy(x.message:find("being written by another download", 1, true), x.message)
          tally.busy = tally.busy + 1
        end
      end
      assert.equal(1, wrote, "round " .. round .. ": " .. (fe.read(o1) or "") .. " | " .. (fe.read(o2) or ""))
      assert.same({ t.final }, fe.ls(d)) -- the file, no part or staging file left
      assert.is_true(fe.read(d .. "/" .. t.final) == t.want, "round " .. round .. ": wrong bytes")
      fe.rmdir(d)
    end
    print(string.format("\n[download safety] 20 rounds, 2 processes each: %d wrote the file, %d skipped it (found it complete), %d got the io error (locked)",
      tally.ok, tally.skipped, tally.busy))
    assert.equal(20, tally.ok)
  end)

  it("two coroutines downloading one output: one writes it, the other is told", function()
    local taskapi = require "taskapi"
    local c = env:client("tripo")
    local id = env:add { provider = "tripo", queue = 0, run = 0, file_size = SIZE, stall = 0.3 }
    local task = assert(c:status(id))
    local r = taskapi.run(function()
      local a = taskapi.spawn(function() return c:download(task, { dir = dir, outputs = "model" }) end)
      local b = taskapi.spawn(function() return c:download(task, { dir = dir, outputs = "model" }) end)
      local fa, ea = a:join()
      local fb, eb = b:join()
      return { { fa, ea }, { fb, eb } }
    end)
    local wrote, told = 0, 0
    for _, x in ipairs(r) do
      local files, err = x[1], x[2]
      if files and not files[1].skipped then
        wrote = wrote + 1
        assert.equal(SIZE, files[1].bytes)
      elseif files then
        told = told + 1
      else
        fe.check_err(err, "io")
        assert.truthy(err.message:find("being written by another download", 1, true), err.message)
        told = told + 1
      end
    end
    assert.equal(1, wrote)
    assert.equal(1, told)
    local final = id .. "_model.glb"
    assert.same({ final }, fe.ls(dir))
    assert.is_true(fe.read(dir .. "/" .. final) == fe.expected_bytes(id, "model", SIZE))
  end)

  for _, p in ipairs({ "tripo", "sellerpic" }) do
    it(p .. ": a symlink (or a hard link) planted at the part path is not followed (io error, its target untouched, no file request)", function()
      local c = env:client(p)
      local id = env:add { provider = p, queue = 0, run = 0, file_size = SIZE }
      local task = assert(c:status(id))
      local out = task.outputs[1]
      local final, part = naming.names({ dir = dir }, task, out, p == "sellerpic" and "png" or "glb")
      local victim = work .. "/victim-" .. p
      fe.write(victim, "precious")
      fe.sh("ln -s " .. q(victim) .. " " .. q(part))
      local mark = env:mark()
      local files, err = c:download(task, { dir = dir, outputs = out.name })
      assert.is_nil(files)
      fe.check_err(err, "io")
      assert.truthy(err.message:find("symbolic link", 1, true), err.message)
      assert.equal("precious", fe.read(victim))
      assert.is_false(fe.exists(final))
      assert.equal(0, #fe.file_requests(env:log(mark)))
      assert.equal("link", fe.sh("test -L " .. q(part) .. " && echo link"))
      -- a hard link to another file is not written through either
      os.remove(part)
      fe.sh("ln " .. q(victim) .. " " .. q(part))
      files, err = c:download(task, { dir = dir, outputs = out.name })
      assert.is_nil(files)
      fe.check_err(err, "io")
      assert.truthy(err.message:find("hard links", 1, true), err.message)
      assert.equal("precious", fe.read(victim))
      assert.is_false(fe.exists(final))
    end)
  end

  it("a part file left by kill -9 of a child mid-download is resumed with Range by the next run", function()
    local p = "tripo"
    local c = env:client(p)
    local id = env:add { provider = p, queue = 0, run = 0, file_size = SIZE, stall = 20, stall_count = 1 }
    local task = assert(c:status(id))
    local out = task.outputs[1]
    local final, part = naming.names({ dir = dir }, task, out, "glb")
    local pid = fe.sh("sh -c " .. q(child_cmd(p, id, dir, out.name) .. " >/dev/null 2>&1 & echo $!"))
    assert.truthy(pid:match("^%d+$"), pid)
    local deadline = fe.now() + 10
    while (require("taskapi.util.files").size(part) or 0) < SIZE / 2 and fe.now() < deadline do
      require("taskapi.core").sleep(0.05)
    end
    local half = require("taskapi.util.files").size(part)
    assert.equal(SIZE / 2, half) -- the fake stalls at half the file
    fe.sh("kill -9 " .. pid)
    deadline = fe.now() + 5
    while fe.sh("kill -0 " .. pid .. " 2>/dev/null && echo alive") == "alive" and fe.now() < deadline do
      require("taskapi.core").sleep(0.05)
    end
    assert.equal(half, require("taskapi.util.files").size(part)) -- left behind
    assert.is_false(fe.exists(final))
    local mark = env:mark()
    local files = assert(c:download(task, { dir = dir, outputs = out.name }))
    assert.equal(1, #files)
    assert.is_true(files[1].resumed)
    assert.equal(SIZE, files[1].bytes)
    assert.is_true(fe.read(final) == fe.expected_bytes(id, "model", SIZE))
    local reqs = fe.file_requests(env:log(mark))
    assert.equal(1, #reqs)
    assert.equal("bytes=" .. half .. "-", reqs[1].headers.range)
    assert.same({ id .. "_model.glb" }, fe.ls(dir))
  end)

  it("a part file longer than the served file is not trusted: started over (416, then the whole file)", function()
    local c = env:client("tripo")
    local id = env:add { provider = "tripo", queue = 0, run = 0, file_size = SIZE }
    local task = assert(c:status(id))
    local final, part = naming.names({ dir = dir }, task, task.outputs[1], "glb")
    fe.write(part, string.rep("x", SIZE + 10))
    local mark = env:mark()
    local files = assert(c:download(task, { dir = dir, outputs = "model" }))
    assert.is_nil(files[1].resumed)
    assert.is_true(fe.read(final) == fe.expected_bytes(id, "model", SIZE))
    local reqs = fe.file_requests(env:log(mark))
    assert.equal(2, #reqs)
    assert.equal("bytes=" .. (SIZE + 10) .. "-", reqs[1].headers.range)
    assert.is_nil(reqs[2].headers.range)
    assert.same({ id .. "_model.glb" }, fe.ls(dir))
  end)

  for _, p in ipairs({ "tripo", "sellerpic" }) do
    it(p .. ": a folder where some outputs exist gets the missing ones; the others are skipped and reported", function()
      local c = env:client(p)
      local id = env:add(fe.is_tripo(p) and { provider = p, queue = 0, run = 0, file_size = SIZE, multiview = true } or
        { provider = p, queue = 0, run = 0, file_size = SIZE, results = 3 })
      local task = assert(c:status(id))
      assert.is_true(#task.outputs >= 3)
      local first = assert(c:download(task, { dir = dir }))
      fe.write(first[1].path, "precious")
      os.remove(first[2].path)
      local mark = env:mark()
      local files, err = c:download(task, { dir = dir })
      assert.is_nil(err)
      assert.equal(#task.outputs, #files)
      for i, f in ipairs(files) do
        assert.equal(first[i].path, f.path)
        if i == 2 then
          assert.is_nil(f.skipped)
          assert.equal(SIZE, f.bytes)
          local key = fe.is_tripo(p) and f.name or (f.name .. ".png")
          local view = f.name:match("^(%a+)_view$")
          if view then key = "generate_multiview_image." .. view end
          assert.is_true(fe.read(f.path) == fe.expected_bytes(id, key, SIZE))
        else
          assert.is_true(f.skipped)
        end
      end
      assert.equal("precious", fe.read(first[1].path))
      assert.equal(1, #fe.file_requests(env:log(mark)))
      assert.equal(#task.outputs, #fe.ls(dir))
    end)
  end

  it("a file named by its content type is placed without replacing one that exists (skipped)", function()
    local c = env:client("tripo")
    local id = env:add { provider = "tripo", queue = 0, run = 0 }
    local task = assert(c:status(id))
    local copy = {}
    for k, v in pairs(task) do copy[k] = v end
    copy.outputs = { { name = "model", url = env.url .. "/noext/model" } }
    local files = assert(c:download(copy, { dir = dir }))
    local final = dir .. "/" .. id .. "_model.glb"
    assert.equal(final, files[1].path)
    assert.is_nil(files[1].skipped)
    assert.equal("glTF from a link without extension", fe.read(final))
    fe.write(final, "precious")
    files = assert(c:download(copy, { dir = dir })) -- the name is known only from the answer
    assert.is_true(files[1].skipped)
    assert.equal("precious", fe.read(final))
    assert.same({ id .. "_model.glb" }, fe.ls(dir)) -- no part or staging file left
    files = assert(c:download(copy, { dir = dir, overwrite = true }))
    assert.is_nil(files[1].skipped)
    assert.equal("glTF from a link without extension", fe.read(final))
    assert.same({ id .. "_model.glb" }, fe.ls(dir))
  end)

  describe("taskapi.core", function()
    local core = require "taskapi.core"
    local url
    setup(function()
      local c = env:client("tripo")
      local id = env:add { provider = "tripo", queue = 0, run = 0, file_size = SIZE, stall = 0.3 }
      url = assert(c:status(id)).outputs[1].url
    end)

    it("a second transfer on a part another one holds gets an io error at add; the first completes", function()
      local m = core.multi()
      local path, part = dir .. "/f", dir .. "/f.part"
      local t1 = assert(m:add { url = url, path = path, part = part })
      local t2, err = m:add { url = url, path = path, part = part }
      assert.is_nil(t2)
      fe.check_err(err, "io")
      assert.truthy(err.message:find("being written by another download", 1, true))
      assert.is_false(core.remove_part(part)) -- held: left alone
      while m:perform() > 0 do m:poll(0.05) end
      local res = assert(t1:result())
      assert.equal(SIZE, res.bytes)
      assert.same({ "f" }, fe.ls(dir))
      t1:close()
      m:close()
    end)

    it("the final rename replaces nothing unless req.overwrite", function()
      local m = core.multi()
      local path, part = dir .. "/f", dir .. "/f.part"
      fe.write(path, "precious")
      local res, err = m:request { url = url, path = path, part = part }
      assert.is_nil(res)
      fe.check_err(err, "io")
      assert.truthy(err.message:find("exists: not replaced", 1, true), err.message)
      assert.equal("precious", fe.read(path))
      assert.same({ "f" }, fe.ls(dir)) -- the part is removed
      res = assert(m:request { url = url, path = path, part = part, overwrite = true })
      assert.equal(SIZE, res.bytes)
      assert.equal(SIZE, #fe.read(path))
      m:close()
    end)

    it("remove_part: absent is fine, a symlink or a folder is left alone", function()
      assert.is_true(core.remove_part(dir .. "/none.part"))
      fe.write(work .. "/target", "x")
      fe.sh("ln -s " .. q(work .. "/target") .. " " .. q(dir .. "/l.part") .. " && mkdir " .. q(dir .. "/d.part"))
      local ok, why = core.remove_part(dir .. "/l.part")
      assert.is_false(ok)
      assert.equal("a symbolic link", why)
      ok, why = core.remove_part(dir .. "/d.part")
      assert.is_false(ok)
      assert.equal("not a regular file", why)
      assert.same({ "d.part", "l.part" }, fe.ls(dir))
      assert.equal("x", fe.read(work .. "/target"))
    end)
  end)

  describe("a host trickling 2 bytes/s", function()
    local c, task
    setup(function()
      c = env:client("tripo")
      local id = env:add { provider = "tripo", queue = 0, run = 0, file_size = SIZE }
      task = assert(c:status(id))
    end)
    local function trickling()
      local copy = {}
      for k, v in pairs(task) do copy[k] = v end
      copy.outputs = { { name = "model", kind = task.outputs[1].kind, url = env.url .. "/trickle/model.glb" } }
      return copy
    end
    local function timed(opts)
      local t0 = fe.now()
      local files, err = c:download(trickling(), opts)
      local took = fe.now() - t0
      print(string.format("\n[download safety] trickling host, %s: %s after %.2f s", opts.min_speed_time and "min_speed_time = " ..
        opts.min_speed_time or opts.timeout and "timeout = " .. opts.timeout or "defaults", err and err.kind or "no error", took))
      return files, err, took
    end

    it("ends at the speed floor (min_speed by default, min_speed_time = 2) with a timeout error", function()
      local files, err, took = timed { dir = dir, min_speed_time = 2 }
      assert.is_nil(files)
      fe.check_err(err, "timeout")
      assert.truthy(err.message:find("too slow", 1, true), err.message)
      assert.truthy(err.message:find("min_speed 1024 bytes/s", 1, true), err.message)
      assert.is_true(took >= 2 and took < 6, "took " .. took)
      assert.same({}, fe.ls(dir))
    end)

    it("ends at the total limit (timeout = 1.5, no floor) with a timeout error", function()
      local files, err, took = timed { dir = dir, timeout = 1.5, min_speed = 0 }
      assert.is_nil(files)
      fe.check_err(err, "timeout")
      assert.truthy(err.message:find("within timeout = 1.5 s", 1, true), err.message)
      assert.is_true(took >= 1.4 and took < 4, "took " .. took)
      assert.same({}, fe.ls(dir))
    end)

    it("ends within the defaults (1024 bytes/s on average after 30 s) #slow", function()
      local files, err, took = timed { dir = dir }
      assert.is_nil(files)
      fe.check_err(err, "timeout")
      assert.truthy(err.message:find("too slow", 1, true), err.message)
      assert.is_true(took >= 30 and took < 36, "took " .. took)
      assert.same({}, fe.ls(dir))
    end)
  end)
end)
