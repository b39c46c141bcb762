-- What a new user writes first, run as they would run it (a script in a fresh folder, the
-- real C module, the nginx fake): the README's five lines (the key from the environment, a
-- download folder that does not exist yet), taskapi.new without api_key,
-- `print("failed: " .. err)`, the README's busted example (twice in the same folder) and its
-- shell workflow (examples/photo.png, a real PNG).
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

-- The code block of the README that follows the line holding marker.
local function readme_block(marker, lang)
  local text = assert(fe.read(ROOT .. "/README.md"))
  local at = assert(text:find(marker, 1, true), "README lost: " .. marker)
  local block = text:match("```" .. lang .. "\n(.-)\n```", at)
  return assert(block, "no " .. lang .. " block after: " .. marker)
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
    local tripo = p:match("^tripo") ~= nil -- tripo, tripo-v2
    local var = tripo and "TRIPO_API_KEY" or "SELLERPIC_API_KEY"
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
      code, out = script(cwd, text, (tripo and "SELLERPIC_API_KEY" or "TRIPO_API_KEY") .. "=test-key")
      assert.equal(2, code, out)
      assert.equal("new: taskapi invalid_argument: option 'api_key' is required (or set " .. var .. ")\n", out)
    end)
  end

  it("the README's busted example passes, and again on a second run in the same folder", function()
    local cwd = dir .. "/busted"
    os.execute("mkdir " .. q(cwd))
    fe.write(cwd .. "/my_spec.lua", readme_block("## Testing your own workflow with busted", "lua"))
    for _ = 1, 2 do
      local out = fe.sh("cd " .. q(cwd) .. " && " .. LUA .. " /usr/bin/busted --lpath=" .. q(ROOT .. "/lua/?.lua;" .. ROOT ..
        "/lua/?/init.lua") .. " --cpath=" .. q(ROOT .. "/build/" .. LUA .. "/?.so") .. " my_spec.lua 2>&1; echo exit=$?")
      assert.matches("1 success / 0 failures / 0 errors", out, 1, true)
      assert.matches("exit=0$", out)
    end
  end)

  it("the README's shell workflow runs as written from a checkout, with examples/photo.png", function()
    local png = assert(fe.read(ROOT .. "/examples/photo.png"))
    assert.equal("\137PNG\r\n\26\n", png:sub(1, 8))
    assert.is_true(#png > 100 and #png < 2000)
    assert.matches("^OK: .*64x64", fe.sh("pngcheck " .. q(ROOT .. "/examples/photo.png") .. " 2>&1 || true"))
    -- a checkout of its own (the block writes ./out), and a TMPDIR of its own for the fake's state
    local co = dir .. "/checkout"
    os.execute("mkdir -p " .. q(co .. "/tmp") .. " && cp -r " .. q(ROOT .. "/bin") .. " " .. q(ROOT .. "/lua") .. " " ..
      q(ROOT .. "/examples") .. " " .. q(co) .. " && ln -s " .. q(ROOT .. "/build") .. " " .. q(co .. "/build"))
    fe.write(co .. "/workflow.sh", "set -e\n" .. readme_block("A whole workflow from the shell", "sh") .. "\n")
    local envs = "env -u TASKAPI_API_KEY -u LUA_PATH -u LUA_CPATH TMPDIR=" .. q(co .. "/tmp")
    local out = fe.sh("cd " .. q(co) .. " && " .. envs .. " sh workflow.sh 2>&1; echo exit=$?")
    local left = fe.sh("ls " .. q(co .. "/tmp") .. "/taskapi-fake-*/")
    fe.sh("cd " .. q(co) .. " && " .. envs .. " bin/taskapi fake stop 2>&1") -- should the block have stopped early
    assert.matches("exit=0$", out)
    assert.matches("saved out/", out, 1, true)
    assert.matches("balance: %d+", out)
    local saved = fe.sh("ls " .. q(co .. "/out"))
    assert.matches("_model%.glb", saved)
    -- the fake it started is stopped, and its state file gone
    assert.equal("", left)
  end)

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
