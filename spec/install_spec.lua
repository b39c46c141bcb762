-- Installing as a new user would: `make install` into a temporary PREFIX for Lua 5.4 and for
-- LuaJIT, and `luarocks make` into a temporary tree for Lua 5.1 (Debian luarocks' default) and
-- 5.4, each from a copy of the tracked files. The installed `taskapi` launcher then runs from
-- another folder with package paths that hold none of the checkout (so it finds only what was
-- installed): --help, and a status call against the nginx fake. The installed module loads
-- under its interpreter without the launcher too.
local fe = require "support.fake_env"
local files = require "taskapi.util.files"
local q = fe.q

local CJSON = { ["5.4"] = "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so", ["5.1"] = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so" }

-- Runs cmd in folder cwd with package paths outside the checkout; returns code, stdout, stderr.
-- ver nil: the environment as it is (luarocks is itself a Lua program).
local function run_in(cwd, ver, cmd)
  local out, err = os.tmpname(), os.tmpname()
  local envs = ver and "LUA_PATH='/nonexistent/?.lua' LUA_CPATH=" .. q(CJSON[ver]) ..
    " TASKAPI_API_KEY=test-key TRIPO_API_KEY= SELLERPIC_API_KEY= " or ""
  local p = io.popen("cd " .. q(cwd) .. " && " .. envs .. cmd .. " >" .. out .. " 2>" .. err .. "; echo $?")
  local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local o, e = fe.read(out) or "", fe.read(err) or ""
  os.remove(out)
  os.remove(err)
  return code, o, e
end

local function has_luarocks(ver)
  return os.execute("luarocks --lua-version=" .. ver .. " config lua_interpreter >/dev/null 2>&1") == true or
    os.execute("luarocks --lua-version=" .. ver .. " config lua_interpreter >/dev/null 2>&1") == 0
end

-- Each case installs for its own runtime whatever runs busted: the suite under LuaJIT and the
-- ASan suite would only repeat the same builds, so the cases run once, under Lua 5.4.
local once = not jit and os.getenv("ASAN_OPTIONS") == nil

describe("installing", function()
  if not once then
    it("runs in the Lua 5.4 suite (each case installs for every runtime itself)", function()
      pending("see the Lua 5.4 suite")
    end)
    return
  end
  local env, tmp, src
  setup(function()
    env = fe.start()
    tmp = fe.tmpdir()
    -- a copy of the tracked files: a build here leaves nothing in the checkout
    src = tmp .. "/src"
    files.mkdir_p(src)
    assert(os.execute("git ls-files -z | xargs -0 cp --parents -t " .. q(src)))
  end)
  teardown(function()
    if env then env:stop() end
    fe.rmdir(tmp)
  end)

  -- the launcher at bin, run from an unrelated folder with no path to the checkout: --help,
  -- then the status of a finished task
  local function check_launcher(bin, ver)
    local elsewhere = tmp .. "/elsewhere"
    files.mkdir_p(elsewhere)
    local code, out, err = run_in(elsewhere, ver, q(bin) .. " --help")
    assert.equal(0, code, err)
    assert.matches("^usage: taskapi <command>", out)
    local id = env:add { provider = "tripo", queue = 0, run = 0 }
    code, out, err = run_in(elsewhere, ver, q(bin) .. " status " .. id .. " --json --base-url " .. env.base.tripo)
    assert.equal(0, code, err)
    assert.matches('"state":"succeeded"', out, 1, true)
    assert.matches(id, out, 1, true)
  end

  for _, rt in ipairs({ { lua = "lua5.4", ver = "5.4" }, { lua = "luajit", ver = "5.1" } }) do
    it("make install PREFIX=... LUA=" .. rt.lua .. ": the launcher runs under " .. rt.lua .. " from anywhere", function()
      local prefix = tmp .. "/prefix-" .. rt.lua
      local code = run_in(src, nil, "make -s install PREFIX=" .. q(prefix) .. " LUA=" .. rt.lua .. " >/dev/null")
      assert.equal(0, code)
      assert.is_true(fe.exists(prefix .. "/lib/lua/" .. rt.ver .. "/taskapi/core.so"))
      assert.is_true(fe.exists(prefix .. "/share/lua/" .. rt.ver .. "/taskapi/cli.lua"))
      assert.equal("#!/usr/bin/env " .. rt.lua, (fe.read(prefix .. "/bin/taskapi"):match("^[^\n]*")))
      check_launcher(prefix .. "/bin/taskapi", rt.ver)
      -- the installed module, without the launcher: the paths a user sets after make install
      local lp = prefix .. "/share/lua/" .. rt.ver .. "/?.lua;" .. prefix .. "/share/lua/" .. rt.ver .. "/?/init.lua"
      local out
      code, out = run_in(tmp, rt.ver, "LUA_PATH=" .. q(lp) .. " LUA_CPATH=" .. q(prefix .. "/lib/lua/" .. rt.ver .. "/?.so;" ..
        CJSON[rt.ver]) .. " " .. rt.lua .. " -e 'local t = require \"taskapi\"; print(t._VERSION, package.searchpath and " ..
        "package.searchpath(\"taskapi.core\", package.cpath) or \"\")'")
      assert.equal(0, code)
      assert.matches("^taskapi %d+%.%d+%.%d+", out)
    end)
  end

  it("a symbolic link to a checkout's bin/taskapi finds that checkout", function()
    local links = tmp .. "/links"
    files.mkdir_p(links)
    assert(os.execute("ln -s " .. q(src .. "/bin/taskapi") .. " " .. q(links .. "/taskapi")))
    local code = run_in(src, nil, "make -s build LUA=lua5.4 >/dev/null")
    assert.equal(0, code)
    check_launcher(links .. "/taskapi", "5.4")
  end)

  for _, ver in ipairs({ "5.1", "5.4" }) do
    it("luarocks make --deps-mode=none --lua-version=" .. ver .. " into a new tree builds without warning and loads", function()
      if not has_luarocks(ver) then
        pending("luarocks for Lua " .. ver .. " is not installed (apt-get install luarocks liblua" .. ver .. "-dev)")
        return
      end
      local tree = tmp .. "/tree-" .. ver
      local log = tmp .. "/luarocks-" .. ver .. ".log"
      local code = run_in(src, nil, "luarocks --lua-version=" .. ver .. " make --deps-mode=none --tree=" .. q(tree) ..
        " >" .. q(log) .. " 2>&1")
      local text = fe.read(log) or ""
      assert.equal(0, code, text)
      assert.is_nil(text:find("warning", 1, true), text)
      local so = tree .. "/lib/lua/" .. ver .. "/taskapi/core.so"
      assert.is_true(fe.exists(so))
      local interp = "lua" .. ver
      local out, err
      code, out, err = run_in(tmp, ver, "LUA_PATH=" .. q(tree .. "/share/lua/" .. ver .. "/?.lua;" .. tree .. "/share/lua/" ..
        ver .. "/?/init.lua") .. " LUA_CPATH=" .. q(tree .. "/lib/lua/" .. ver .. "/?.so;" .. CJSON[ver]) .. " " .. interp ..
        " -e 'local t = require \"taskapi\"; local c = assert(t.new{provider = \"tripo\", api_key = \"k\"}); " ..
        "print(t._VERSION, require(\"taskapi.core\").version, _VERSION)'")
      assert.equal(0, code, err)
      assert.matches("^taskapi %d+%.%d+%.%d+%s+%d+%.%d+%.%d+%s+Lua " .. ver:gsub("%.", "%%."), out)
      -- LuaRocks' wrapper of bin/taskapi finds the tree it was installed in
      check_launcher(tree .. "/bin/taskapi", ver)
    end)
  end
end)
