-- bin/taskapi as a subprocess against the nginx fake: every subcommand, --json output parsed,
-- each exit code provoked (0, 1, 2, 3, 4), a terminal run under a pseudo-terminal (script)
-- showing the live line redrawn, and one run under LuaJIT.
local cjson = require "cjson"
local fe = require "support.fake_env"

local LUA = jit and "luajit" or "lua5.4"
local PNG = "\137PNG\r\n\26\n" .. string.rep("\1", 100)

describe("bin/taskapi", function()
  local env, dir, state
  setup(function()
    env = fe.start()
    dir = fe.tmpdir()
    state = dir .. "/fake.state"
  end)
  teardown(function()
    if env then env:stop() end
    fe.rmdir(dir)
  end)

  -- Runs the launcher with the runtime of this spec; returns exit code, stdout, stderr.
  local function run(args, opts)
    opts = opts or {}
    local key = opts.key == nil and "test-key" or opts.key
    local envs = "LUA_PATH=';;' LUA_CPATH=';;' TASKAPI_API_KEY=" .. (key and fe.q(key) or "''") .. " TRIPO_API_KEY= SELLERPIC_API_KEY= "
    local cmd = envs .. (opts.lua or LUA) .. " bin/taskapi " .. args
    local out, err = dir .. "/out", dir .. "/err"
    local p = io.popen(cmd .. " >" .. out .. " 2>" .. err .. "; echo $?")
    local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
    p:close()
    return code, fe.read(out) or "", fe.read(err) or ""
  end

  local function base(provider)
    return "--base-url " .. env.base[provider or "tripo"]
  end

  local function json_lines(s)
    local out = {}
    for line in s:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
    return out
  end

  local FAST = "--min-interval 0.1 --interval 0.2"

  it("prints help for the tool and for every subcommand", function()
    local code, out = run("--help")
    assert.equal(0, code)
    for _, c in ipairs({ "status", "wait", "download", "create", "upload", "balance", "fake" }) do
      assert.matches("\n  " .. c, out, 1, true)
      local c2, out2 = run(c .. " --help")
      assert.equal(0, c2)
      assert.matches("^usage: taskapi " .. c, out2)
    end
    assert.matches("Exit codes: 0 all succeeded, 1 a task failed, 2 usage error, 3 API or network error, 4 timeout", out, 1, true)
  end)

  it("exit 2 for usage errors: no command, unknown command or option, missing argument, no key", function()
    assert.equal(2, (run("")))
    local code, _, err = run("frobnicate")
    assert.equal(2, code)
    assert.matches("unknown command 'frobnicate'", err)
    code, _, err = run("status --bogus x")
    assert.equal(2, code)
    assert.matches("unknown option %-%-bogus", err)
    assert.equal(2, (run("download abc " .. base())))     -- --dir is required
    assert.equal(2, (run("create " .. base())))           -- --type is required
    assert.equal(2, (run("wait x --timeout soon " .. base())))
    code, _, err = run("balance " .. base(), { key = false })
    assert.equal(2, code)
    assert.matches("no API key: set TASKAPI_API_KEY", err)
    code, _, err = run("upload " .. dir .. "/missing.png " .. base())
    assert.equal(2, code)
    assert.matches("^taskapi: taskapi invalid_argument: upload: cannot open", err)
    code, _, err = run("create --type x --param novalue " .. base())
    assert.equal(2, code)
    assert.matches("key=value", err)
  end)

  it("--api-key works but warns that it lands in shell history", function()
    local code, out, err = run("balance --api-key test-key " .. base(), { key = false })
    assert.equal(0, code)
    assert.matches("balance: %d+", out)
    assert.matches("warning: %-%-api%-key lands in your shell history", err)
  end)

  for _, provider in ipairs(fe.PROVIDERS) do
    describe(provider, function()
      local P = "--provider " .. provider .. " " .. base(provider)

      it("balance, plain and --json", function()
        local code, out = run("balance " .. P)
        assert.equal(0, code)
        assert.matches(provider == "tripo" and "balance: %d+\nfrozen: %d+" or "remaining: %d+\ntotal: %d+\nusage: %d+", out)
        code, out = run("balance --json " .. P)
        assert.equal(0, code)
        local b = json_lines(out)[1]
        if provider == "tripo" then assert.is_number(b.balance) else assert.is_number(b.remaining) end
      end)

      it("upload prints the reference; --json names it; the fake got the bytes", function()
        fe.write(dir .. "/cat.png", PNG)
        local mark = env:mark()
        local code, out = run("upload " .. dir .. "/cat.png --json " .. P)
        assert.equal(0, code)
        local j = json_lines(out)[1]
        local field = provider == "tripo" and "image_token" or "fileKey"
        assert.is_string(j.ref)
        assert.equal(j.ref, j[field])
        local log = env:log(mark)
        assert.equal(#PNG, log[#log].upload.size)
        code, out = run("upload " .. dir .. "/cat.png " .. P)
        assert.equal(0, code)
        assert.matches("^%S+\n$", out)
      end)

      it("create --param (numbers, booleans, nested fake script), then status, wait --download and download", function()
        local code, out = run("create --type " .. (provider == "tripo" and "text_to_model" or "instructEdit") ..
          " --param prompt=cat --param seed=42 --param hd=true --param fake.queue=0 --param fake.run=1 --json " .. P)
        assert.equal(0, code)
        local id = json_lines(out)[1].id
        assert.is_string(id)
        local info = env:task_info(id)
        assert.equal(42, info.spec.input.seed)
        -- sent as an integer literal (cjson above reads every number as a float on 5.4)
        local raw = fe.sh("curl -s " .. env.url .. "/_fake/tasks/" .. id)
        assert.matches('"seed":%s*42[,}]', raw)
        assert.equal(true, info.spec.input.hd)
        assert.equal("cat", info.spec.input.prompt)
        assert.equal(1, info.spec.run)

        code, out = run("status " .. id .. " --json " .. P)
        assert.equal(0, code)
        local t = json_lines(out)[1]
        assert.equal(id, t.id)
        assert.is_false(t.done)

        local wdir = dir .. "/w-" .. provider
        code, out = run("wait " .. id .. " --json --download " .. wdir .. " " .. FAST .. " " .. P)
        assert.equal(0, code)
        local lines = json_lines(out)
        assert.equal("succeeded", lines[1].state)
        assert.is_true(lines[1].ok)
        assert.is_true(#lines >= 2)
        for i = 2, #lines do
          assert.equal(id, lines[i].id)
          assert.equal(lines[i].bytes, #fe.read(lines[i].path))
        end

        local ddir = dir .. "/d-" .. provider
        code, out = run("download " .. id .. " --dir " .. ddir .. " --json " .. P)
        assert.equal(0, code)
        local files = json_lines(out)
        assert.equal(#lines - 1, #files)
        code, out = run("download " .. id .. " --dir " .. ddir .. " --overwrite " .. P)
        assert.equal(0, code)
        assert.matches("saved " .. ddir, out, 1, true)
      end)

      it("exit 1 when a task failed (wait and status), with the task's error in --json", function()
        local id = env:add { provider = provider, queue = 0, run = 0, final = "failed" }
        local code, out = run("wait " .. id .. " --json " .. FAST .. " " .. P)
        assert.equal(1, code)
        local t = json_lines(out)[1]
        assert.equal("failed", t.state)
        assert.is_false(t.ok)
        assert.equal(1, (run("status " .. id .. " " .. P)))
      end)

      it("exit 3 for API errors: wrong key, unknown task; the key never shows", function()
        local id = env:add { provider = provider, queue = 0, run = 0 }
        local code, out, err = run("status " .. id .. " --json " .. P, { key = "wrong-key-123" })
        assert.equal(3, code)
        assert.matches("^taskapi: taskapi auth: ", err)
        assert.is_nil(err:find("wrong-key-123", 1, true))
        assert.equal("auth", json_lines(out)[1].error.kind)
        local missing = provider == "tripo" and "no-such-task" or "1234567890"
        code, _, err = run("status " .. missing .. " " .. P)
        assert.equal(3, code)
        assert.matches("not_found", err)
        code = run("balance --base-url http://127.0.0.1:9/x --provider " .. provider)
        assert.equal(3, code)
      end)

      it("exit 4 when waiting times out", function()
        local id = env:add { provider = provider, queue = 30, run = 30 }
        local code, out, err = run("wait " .. id .. " --timeout 1 --json " .. FAST .. " " .. P)
        assert.equal(4, code)
        assert.matches("timeout", err)
        local j = json_lines(out)[1]
        assert.equal(id, j.id)
        assert.equal("timeout", j.error.kind)
      end)
    end)
  end

  it("the most serious outcome wins over several tasks; plain lines when not a terminal", function()
    local ok = env:add { provider = "tripo", queue = 0, run = 0 }
    local bad = env:add { provider = "tripo", queue = 0, run = 0, final = "failed" }
    local code, out = run("wait " .. ok .. " " .. bad .. " " .. FAST .. " " .. base())
    assert.equal(1, code)
    assert.matches(ok .. "  succeeded", out, 1, true)
    assert.matches(bad .. "  failed", out, 1, true)
    assert.is_nil(out:find("\27", 1, true))
    assert.is_nil(out:find("\r", 1, true))
  end)

  it("create --wait on a terminal redraws a live progress line in place", function()
    local ddir = dir .. "/tty"
    local cmd = "LUA_PATH=';;' LUA_CPATH=';;' TASKAPI_API_KEY=test-key " .. LUA .. " bin/taskapi create --type text_to_model" ..
      " --param fake.queue=1 --param fake.run=2 --param fake.file_size=200000 --wait --download " .. ddir .. " " ..
      FAST .. " " .. base()
    local p = io.popen("script -qfec " .. fe.q(cmd) .. " /dev/null; echo \"exit=$?\"")
    local out = p:read("*a")
    p:close()
    assert.matches("exit=0", out)
    assert.truthy(out:find("\r\27[2K", 1, true), "no carriage return + erase line")
    assert.truthy(out:find("\27[1A", 1, true) or out:find("\27[2A", 1, true), "no cursor-up redraw")
    local states = {}
    for s in out:gmatch("\27%[2K%S+%s+(%a+)%s") do states[s] = true end
    local n = 0
    for _ in pairs(states) do n = n + 1 end
    assert.is_true(n >= 2, "expected more than one progress state")
    assert.is_true(states.succeeded)
    assert.matches("%[####################%]", out)          -- a full progress bar
    assert.matches("B/s", out)                              -- download speed
    assert.matches("saved " .. ddir, out, 1, true)
  end)

  it("runs under LuaJIT too", function()
    local code, out = run("balance --json " .. base(), { lua = "luajit" })
    assert.equal(0, code)
    assert.is_number(json_lines(out)[1].balance)
  end)

  it("fake start, status and stop", function()
    local code, out = run("fake start --ttl 30 --state " .. state)
    assert.equal(0, code)
    local url = out:match("^(http://127%.0%.0%.1:%d+)")
    assert.is_string(url)
    code, out = run("fake status --state " .. state)
    assert.equal(0, code)
    assert.equal(url .. "\n", out)
    code = run("balance --base-url " .. url .. "/tripo/v2/openapi")
    assert.equal(0, code)
    assert.equal(0, (run("fake stop --state " .. state)))
    assert.equal(1, (run("fake status --state " .. state)))
  end)
end)

describe("taskapi.cli --param parsing", function()
  local cli = require "taskapi.cli"
  local json = require "taskapi.json"

  it("keeps numbers numbers (integers exact), booleans booleans, the rest strings; dots nest", function()
    local t = {}
    for _, p in ipairs({ "n=42", "neg=-7", "f=0.5", "e=1e3", "yes=true", "no=false", "s=hello", "zip=007",
      "big=1869254713398571010", "fake.queue=1", "fake.faults.server_errors=2", "eq=a=b", "empty=" }) do
      assert(cli.put_param(t, p))
    end
    assert.equal(42, t.n)
    assert.equal(-7, t.neg)
    if math.type then assert.equal("integer", math.type(t.n)) end
    assert.equal(0.5, t.f)
    assert.equal(1000, t.e)
    assert.is_true(t.yes)
    assert.is_false(t.no)
    assert.equal("hello", t.s)
    assert.equal("007", t.zip)
    assert.equal("a=b", t.eq)
    assert.equal("", t.empty)
    assert.same({ queue = 1, faults = { server_errors = 2 } }, t.fake)
    -- a 19-digit id reaches the JSON body exactly on both runtimes
    assert.matches('"big":1869254713398571010[,}]', json.encode(t))
  end)

  it("refuses malformed keys", function()
    assert.is_nil((cli.put_param({}, "novalue")))
    assert.is_nil((cli.put_param({}, "a..b=1")))
    assert.is_nil((cli.put_param({ a = 1 }, "a.b=1")))
  end)
end)
