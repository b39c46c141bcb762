-- bin/taskapi as a subprocess against the nginx fake: every subcommand, --json output parsed,
-- each exit code provoked (0, 1, 2, 3, 4, 5), the messages a new user meets (one line per
-- usage error, suggestions, one prefix), a terminal run under a pseudo-terminal (script)
-- showing the live line redrawn and the ETA counting down, `taskapi fake` per user and folder,
-- and one run under LuaJIT.
local cjson = require "cjson"
local fe = require "support.fake_env"

local LUA = jit and "luajit" or "lua5.4"
local ROOT = fe.sh("pwd")
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
  -- opts: key (false: none), lua, cwd (run from that folder), env (more VAR=value words).
  local function run(args, opts)
    opts = opts or {}
    local key = opts.key == nil and "test-key" or opts.key
    local envs = "LUA_PATH=';;' LUA_CPATH=';;' TASKAPI_API_KEY=" .. (key and fe.q(key) or "''") .. " TRIPO_API_KEY= SELLERPIC_API_KEY= " ..
      (opts.env or "") .. " "
    local cmd = (opts.cwd and "cd " .. fe.q(opts.cwd) .. " && " or "") .. envs .. (opts.lua or LUA) .. " " .. ROOT .. "/bin/taskapi " .. args
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

  it("prints its version: the library's, libcurl's and the runtime's", function()
    local code, out = run("--version")
    assert.equal(0, code)
    assert.matches("^taskapi %d+%.%d+%.%d+ %(libcurl/[%d.]+, [^)]+%)\n$", out)
  end)

  it("prints help for the tool and for every subcommand", function()
    local code, out = run("--help")
    assert.equal(0, code)
    for _, c in ipairs({ "status", "wait", "download", "create", "upload", "balance", "fake" }) do
      assert.matches("\n  " .. c, out, 1, true)
      local c2, out2 = run(c .. " --help")
      assert.equal(0, c2)
      assert.matches("^usage: taskapi " .. c, out2)
    end
    assert.matches("Exit codes: 0 all succeeded, 1 a task failed, 2 usage or local file error, 3 API or network\n" ..
      "error, 4 timeout, 5 a task is not finished yet (status, download).", out, 1, true)
  end)

  it("a usage error is one line and where to look, never the whole help; a near command or option is suggested", function()
    for _, c in ipairs({ { "stauts x", "^taskapi: unknown command 'stauts'; did you mean 'status'%?\nsee taskapi %-%-help\n$" },
      { "dwonload x", "did you mean 'download'%?" }, { "frobnicate", "^taskapi: unknown command 'frobnicate'\nsee taskapi %-%-help\n$" },
      { "status", "^taskapi status: missing argument ID\nsee taskapi status %-%-help\n$" },
      { "status x --jsn", "^taskapi status: unknown option %-%-jsn; did you mean %-%-json%?\nsee taskapi status %-%-help\n$" },
      { "wait x --timout 3", "did you mean %-%-timeout%?" },
      { "balance extra", "^taskapi balance: takes no argument, got 'extra'\n" },
      { "upload a b", "^taskapi upload: too many arguments %(one FILE%)\n" },
      { "download x", "^taskapi download: %-%-dir is required\nsee taskapi download %-%-help\n$" },
      { "create --type x --param novalue " .. base(), "^taskapi create: %-%-param expects key=value, got 'novalue'\nsee taskapi create %-%-help\n$" },
      { "fake statu", "^taskapi fake: unknown command 'statu' %(start, stop or status%)\nsee taskapi fake %-%-help\n$" },
    }) do
      local code, out, err = run(c[1])
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches(c[2], err)
      assert.is_nil(err:find("options of every command", 1, true))
    end
  end)

  it("--provider takes a built-in name in any case; anything else is refused naming the names", function()
    local code, out = run("balance --provider SellerPic --base-url " .. env.base.sellerpic)
    assert.equal(0, code)
    assert.matches("remaining: %d+", out)
    assert.equal(0, (run("balance --provider TRIPO " .. base())))
    local err
    code, out, err = run("balance --provider selerpic " .. base())
    assert.equal(2, code)
    assert.matches("^taskapi balance: %-%-provider must be one of tripo, [%w, -]*sellerpic, got 'selerpic'; did you mean sellerpic%?\n", err)
    assert.is_nil(err:find("definition table", 1, true))
  end)

  it("errors carry one prefix, name the task once, and a refused connection says so once", function()
    local code, _, err = run("status abc-123 --base-url http://127.0.0.1:9/x")
    assert.equal(3, code)
    assert.matches("^taskapi transport: ", err)
    local _, n = err:gsub("Couldn't connect to server", "")
    assert.equal(1, n, err)
    _, n = err:gsub("abc%-123", "")
    assert.equal(1, n, err)
    local id = env:add { provider = "tripo", queue = 30, run = 30 }
    code, _, err = run("wait " .. id .. " --timeout 1 " .. FAST .. " " .. base())
    assert.equal(4, code)
    _, n = err:gsub(id:gsub("%-", "%%-"), "")
    assert.equal(1, n, err)
    assert.matches("^taskapi timeout: ", err)
  end)

  it("exit 5 for a task not finished yet (status, download); a file that exists is kept, with the --overwrite hint", function()
    local id = env:add { provider = "tripo", queue = 30, run = 30 }
    local code, out = run("status " .. id .. " " .. base())
    assert.equal(5, code)
    assert.matches(id .. "  queued", out, 1, true)
    local ddir = dir .. "/unfinished"
    assert.equal(5, (run("download " .. id .. " --dir " .. ddir .. " " .. base())))
    local done = env:add { provider = "tripo", queue = 0, run = 0 }
    local ok = env:add { provider = "tripo", queue = 0, run = 0 }
    assert.equal(5, (run("status " .. done .. " " .. id .. " " .. base())))    -- 5 wins over 0
    local failed = env:add { provider = "tripo", queue = 0, run = 0, final = "failed" }
    assert.equal(1, (run("status " .. failed .. " " .. id .. " " .. base())))  -- 1 wins over 5
    assert.equal(0, (run("download " .. ok .. " --dir " .. ddir .. " " .. base())))
    local out2
    code, out2 = run("download " .. ok .. " --dir " .. ddir .. " " .. base())
    assert.equal(0, code) -- an existing file is kept and said so (files branch: skipped)
    assert.matches("kept .* %(exists; %-%-overwrite replaces it%)", out2)
  end)

  it("sizes in decimal units named as such", function()
    local cli = require "taskapi.cli"
    assert.equal("800.0 MB", cli.fmt_bytes(800000000))
    assert.equal("1.5 GB", cli.fmt_bytes(1500000000))
    assert.equal("2.0 kB", cli.fmt_bytes(2048))
    assert.equal("999 B", cli.fmt_bytes(999))
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
    assert.matches("^taskapi invalid_argument: upload: cannot open", err)
    code, _, err = run("create --type x --param novalue " .. base())
    assert.equal(2, code)
    assert.matches("key=value", err)
  end)

  it("--region picks Tripo's region and a wrong one is a usage error naming the known ones", function()
    local code, _, err = run("balance --region mars " .. base())
    assert.equal(2, code)
    assert.matches("option 'region' must be one of cn, global, got 'mars'", err)
    code = run("balance --region cn " .. base()) -- --base-url still wins: the fake answers
    assert.equal(0, code)
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
        assert.matches(({ tripo = "balance: %d+%.?%d*\nfrozen: %d+", ["tripo-v2"] = "balance: %d+\nfrozen: %d+",
          sellerpic = "remaining: %d+\ntotal: %d+\nusage: %d+" })[provider], out)
        code, out = run("balance --json " .. P)
        assert.equal(0, code)
        local b = json_lines(out)[1]
        if fe.is_tripo(provider) then assert.is_number(b.balance) else assert.is_number(b.remaining) end
      end)

      it("upload prints the reference; --json names it; the fake got the bytes", function()
        fe.write(dir .. "/cat.png", PNG)
        local mark = env:mark()
        local code, out = run("upload " .. dir .. "/cat.png --json " .. P)
        assert.equal(0, code)
        local j = json_lines(out)[1]
        local field = ({ tripo = "file_token", ["tripo-v2"] = "image_token", sellerpic = "fileKey" })[provider]
        assert.is_string(j.ref)
        assert.equal(j.ref, j[field])
        local log = env:log(mark)
        assert.equal(#PNG, log[#log].upload.size)
        code, out = run("upload " .. dir .. "/cat.png " .. P)
        assert.equal(0, code)
        assert.matches("^%S+\n$", out)
      end)

      it("create --param (numbers, booleans, nested fake script), then status, wait --download and download", function()
        local code, out = run("create --type " .. (fe.is_tripo(provider) and "text_to_model" or "instructEdit") ..
          (provider == "tripo" and " --param model_version=v3.1-20260211" or "") ..
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
        assert.equal(5, code) -- not finished yet
        local t = json_lines(out)[1]
        assert.equal(id, t.id)
        assert.is_false(t.done)

        local wdir = dir .. "/w-" .. provider
        code, out = run("wait " .. id .. " --json --download " .. wdir .. " " .. FAST .. " " .. P)
        assert.equal(0, code)
        local lines = json_lines(out)
        assert.equal("task", lines[1].object)
        assert.equal("succeeded", lines[1].state)
        assert.is_true(lines[1].ok)
        assert.is_true(#lines >= 2)
        for i = 2, #lines do
          assert.equal("file", lines[i].object)
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
        assert.matches("^taskapi auth: ", err)
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
        assert.equal("error", j.object)
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
      " --param model_version=v3.1-20260211 --param fake.queue=1 --param fake.run=2 --param fake.file_size=200000 --wait --download " .. ddir .. " " ..
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

  it("on a terminal the ETA counts down between polls", function()
    local id = env:add { provider = "tripo", queue = 0, run = 8 }
    local mark = env:mark()
    local cmd = "LUA_PATH=';;' LUA_CPATH=';;' TASKAPI_API_KEY=test-key " .. LUA .. " bin/taskapi wait " .. id ..
      " --min-interval 0.1 " .. base()
    local p = io.popen("script -qfec " .. fe.q(cmd) .. " /dev/null; echo \"exit=$?\"")
    local out = p:read("*a")
    p:close()
    assert.matches("exit=0", out)
    local etas, order = {}, {}
    for e in out:gmatch("eta (%d+)s") do
      if not etas[e] then etas[e] = true; order[#order + 1] = tonumber(e) end
    end
    local polls = #fe.status_requests(env:log(mark), id)
    assert.is_true(#order >= 4, "ETAs shown: " .. table.concat(order, " "))
    assert.is_true(#order > polls, #order .. " ETAs for " .. polls .. " polls")
    assert.is_true(order[#order] < order[1])
  end)

  it("runs under LuaJIT too", function()
    local code, out = run("balance --json " .. base(), { lua = "luajit" })
    assert.equal(0, code)
    assert.is_number(json_lines(out)[1].balance)
  end)

  -- the live (not zombie) processes of process group pgid: a watchdog's shell and its sleep
  local function group(pgid)
    local n = 0
    for line in fe.sh("ps -o stat= -g " .. pgid .. " || true"):gmatch("[^\n]+") do
      if not line:match("^%s*Z") then n = n + 1 end
    end
    return n
  end

  it("fake start, status and stop with --state; --key adds a key; stop leaves no watchdog", function()
    local code, out, err = run("fake start --ttl 30 --key my-own-key --state " .. state)
    assert.equal(0, code, err)
    local url = out:match("^(http://127%.0%.0%.1:%d+)\n$")
    assert.is_string(url)
    assert.matches("stops by itself in 30 s", err)
    local fdir = fe.read(state):match("^%S+%s+(%S+)")
    local wd = assert(tonumber(fe.read(fdir .. "/watchdog.pid"):match("%d+")))
    os.execute("sleep 0.2")
    assert.equal(2, group(wd))
    code, out, err = run("fake status --state " .. state)
    assert.equal(0, code)
    assert.equal(url .. "\n", out)
    assert.matches("^taskapi fake: running, pid %d+, stops by itself in %d+ s", err)
    assert.equal(0, (run("balance --base-url " .. url .. "/tripo/v3")))
    assert.equal(0, (run("balance --base-url " .. url .. "/tripo/v3", { key = "my-own-key" })))
    assert.equal(3, (run("balance --base-url " .. url .. "/tripo/v3", { key = "not-this-key" })))
    assert.is_nil(fe.read(state):find("my-own-key", 1, true))  -- the state file holds no key
    code, out, err = run("fake start --key another-key --state " .. state)  -- not silently reused
    assert.equal(1, code)
    assert.matches("other %-%-key values", err)
    code, out, err = run("fake stop --state " .. state)
    assert.equal(0, code)
    assert.matches("stopped " .. url, err, 1, true)
    os.execute("sleep 0.2")
    assert.equal(0, group(wd))
    code, out, err = run("fake status --state " .. state)
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("not running %(no state file ", err)
  end)

  it("fake: one state per user and folder under $TMPDIR; status says what it found", function()
    local tmp = dir .. "/tmpdir"
    local a, b = dir .. "/folder a", dir .. "/folder-b"
    os.execute("mkdir -p " .. fe.q(tmp) .. " " .. fe.q(a) .. " " .. fe.q(b))
    local E = "TMPDIR=" .. fe.q(tmp)
    local code, out, err = run("fake status", { cwd = a, env = E })
    assert.equal(1, code)
    assert.matches("not running %(no state file " .. tmp:gsub("%p", "%%%0") .. "/taskapi%-fake%-%d+/folder_a%-%x+%.state%)", err)
    code, out = run("fake start --ttl 30", { cwd = a, env = E })
    assert.equal(0, code)
    local url_a = out:match("^(http://[%d.:]+)\n$")
    code, out = run("fake start --ttl 30", { cwd = b, env = E })
    assert.equal(0, code)
    local url_b = out:match("^(http://[%d.:]+)\n$")
    assert.is_string(url_a)
    assert.is_string(url_b)
    assert.are_not.equal(url_a, url_b)                       -- another folder, another server
    code, out, err = run("fake start", { cwd = a, env = E })   -- the same folder: the same one
    assert.equal(0, code)
    assert.equal(url_a .. "\n", out)
    assert.matches("already running", err)
    local sdir = fe.sh("ls -d " .. fe.q(tmp) .. "/taskapi-fake-*")
    assert.equal("drwx------", fe.sh("stat -c %A " .. fe.q(sdir)))
    assert.equal(0, (run("fake stop", { cwd = a, env = E })))
    code, out = run("fake status", { cwd = b, env = E })
    assert.equal(0, code)
    assert.equal(url_b .. "\n", out)
    -- a state whose server is gone: status says so
    local fdir = fe.read(fe.sh("ls " .. fe.q(sdir) .. "/folder-b-*.state")):match("^%S+%s+(%S+)")
    require("taskapi.fake.process").stop(fdir, false)
    code, out, err = run("fake status", { cwd = b, env = E })
    assert.equal(1, code)
    assert.matches("not running: the state file .* names " .. url_b:gsub("%p", "%%%0") .. ", but its folder .* has no nginx.pid", err)
    assert.equal(0, (run("fake stop", { cwd = b, env = E })))
    fe.rmdir(fdir)
    -- a state folder of someone else is refused
    local other = dir .. "/other"
    os.execute("mkdir -p " .. fe.q(other) .. " && ln -s /tmp " .. fe.q(other .. "/taskapi-fake-" .. fe.sh("id -u")))
    code, out, err = run("fake start", { cwd = a, env = "TMPDIR=" .. fe.q(other) })
    assert.equal(1, code)
    assert.matches("is not a folder of yours: pass %-%-state FILE", err)
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
