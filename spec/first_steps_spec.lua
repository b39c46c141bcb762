-- What a new user writes first, run as they would run it (a script in a fresh folder, the
-- real C module, the nginx fake): the README's five lines (the key from the environment, a
-- download folder that does not exist yet), taskapi.new without api_key, and
-- `print("failed: " .. err)`.
local fe = require "support.fake_env"
local errors = require "taskapi.errors"
local q = fe.q

local LUA = jit and "luajit" or "lua5.4"
local ROOT = fe.sh("pwd")

-- Runs a Lua script in folder cwd with only the given key variables set; returns code, out, err.
local function script(cwd, text, envs)
  local f = cwd .. "/script.lua"
  fe.write(f, text)
  local out, err = cwd .. "/stdout", cwd .. "/stderr"
  local cmd = "cd " .. q(cwd) .. " && env -u TASKAPI_API_KEY TRIPO_API_KEY= SELLERPIC_API_KEY= " .. (envs or "") ..
    " LUA_PATH=" .. q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;") ..
    " LUA_CPATH=" .. q(ROOT .. "/build/" .. LUA .. "/?.so;;") .. " " .. LUA .. " script.lua >stdout 2>stderr; echo $?"
  local code = tonumber(fe.sh(cmd))
  return code, fe.read(out) or "", fe.read(err) or ""
end

describe("first steps", function()
  local env, dir
  setup(function()
    env = fe.start()
    dir = fe.tmpdir()
  end)
  teardown(function()
    if env then env:stop() end
    fe.rmdir(dir)
  end)

  it("the README's five lines work as written (plus base_url): the key from TRIPO_API_KEY, ./out made", function()
    local id = env:add { provider = "tripo", queue = 0, run = 1 }
    local cwd = dir .. "/five"
    os.execute("mkdir " .. q(cwd))
    local code, out, err = script(cwd, table.concat({
      'local taskapi = require "taskapi"',
      'local client = assert(taskapi.new{ provider = "tripo", api_key = os.getenv("TRIPO_API_KEY"), base_url = ' ..
        string.format("%q", env.base.tripo) .. ', min_interval = 0 })',
      'local task = assert(client:wait("' .. id .. '", { timeout = 600, interval = 0.2 }))',
      'local files = assert(client:download(task, { dir = "out" }))',
      'for _, f in ipairs(files) do print(f.name, f.path, f.bytes) end',
    }, "\n"), "TRIPO_API_KEY=test-key")
    assert.equal(0, code, err)
    local n = 0
    for name, path, bytes in out:gmatch("(%S+)\t(%S+)\t(%d+)\n") do
      n = n + 1
      assert.equal("out/" .. id .. "_" .. name .. ".", path:sub(1, #id + #name + 6))
      assert.equal(tonumber(bytes), #fe.read(cwd .. "/" .. path))
    end
    assert.is_true(n >= 1, out)
  end)

  for _, p in ipairs(fe.PROVIDERS) do
    local var = p == "tripo" and "TRIPO_API_KEY" or "SELLERPIC_API_KEY"
    it("taskapi.new without api_key reads " .. var .. "; without it the error names the variable (" .. p .. ")", function()
      local cwd = dir .. "/env-" .. p
      os.execute("mkdir " .. q(cwd))
      local text = 'local taskapi = require "taskapi"\n' ..
        'local c, err = taskapi.new{ provider = "' .. p .. '", base_url = ' .. string.format("%q", env.base[p]) .. ' }\n' ..
        'if not c then print("new: " .. err) os.exit(2) end\n' ..
        'local b, berr = c:balance()\n' ..
        'if not b then print("balance: " .. berr) os.exit(3) end\n' ..
        'print("balance ok")\n'
      local code, out = script(cwd, text, var .. "=test-key")
      assert.equal(0, code, out)
      assert.equal("balance ok\n", out)
      -- a wrong key from the variable reaches the API (auth), and never shows
      code, out = script(cwd, text, var .. "=wrong-key-4567")
      assert.equal(3, code, out)
      assert.matches("^balance: taskapi auth: ", out)
      assert.is_nil(out:find("wrong-key-4567", 1, true))
      -- neither api_key nor the variable (the other provider's does not count)
      code, out = script(cwd, text, (p == "tripo" and "SELLERPIC_API_KEY" or "TRIPO_API_KEY") .. "=test-key")
      assert.equal(2, code, out)
      assert.equal("new: taskapi invalid_argument: option 'api_key' is required (or set " .. var .. ")\n", out)
    end)
  end

  it("an error concatenates like a string on either side and prints as tostring does", function()
    local e = errors.new("auth", "tripo: wrong key", { status = 401, task_id = "abc" })
    local s = tostring(e)
    assert.equal("taskapi auth: tripo: wrong key (HTTP 401, task abc)", s)
    assert.equal("failed: " .. s, "failed: " .. e)
    assert.equal(s .. "!", e .. "!")
    assert.equal("[" .. s .. "]", "[" .. e .. "]")
    assert.equal(s .. s, e .. e)
    assert.equal("1" .. s, 1 .. e)
    assert.has_error(function() return e .. {} end)
    -- the errors the C module makes share the metatable
    local c = require("taskapi").new { provider = "tripo", api_key = "k", base_url = "http://127.0.0.1:9/x", retries = 0 }
    local t, err = c:status("abc")
    assert.is_nil(t)
    assert.equal("transport", err.kind)
    assert.equal("failed: " .. tostring(err), "failed: " .. err)
    c:close()
  end)
end)
