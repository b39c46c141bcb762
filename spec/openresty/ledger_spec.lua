-- OpenResty: the ledger inside nginx. Two workers run requests that each create tasks on the
-- nginx fake, wait for them and download their results with a client whose ledger is one
-- SQLite file, or one Redis (a private redis-server, reached through resty.redis on
-- cosockets), four requests at once (so both workers write to it together); the spec then
-- reads the ledger from its own process: every intent created, every task finalized, every
-- result saved once with the fake's bytes.
local nginx = require "taskapi.fake.process"
local fe = require "support.fake_env"
local ledger = require "taskapi.ledger"
local rs = require "support.redis"

describe("the ledger inside nginx (two workers, one file) #openresty", function()
  local env, app, dir

  setup(function()
    env = fe.start()
    dir = fe.tmpdir()
    os.execute("chmod 0777 " .. fe.q(dir))
    app = assert(nginx.start {
      workers = 2,
      ttl = 300,
      locations = [[
    location = /work {
      content_by_lua_block {
        local taskapi = require "taskapi"
        local a = ngx.req.get_uri_args()
        local c, cerr = taskapi.new { provider = "tripo", api_key = "test-key", base_url = a.base,
          min_interval = 0, ledger = a.ledger }
        if not c then ngx.say("new failed: ", tostring(cerr)) return end
        local ids = {}
        for i = 1, tonumber(a.n) do
          ids[i] = assert(c:create { type = "text_to_model", model_version = "v3.1-20260211",
            prompt = "worker " .. ngx.worker.pid() .. " " .. i, fake = { queue = 0, run = 0.3, file_size = 3000 } })
        end
        local saved = 0
        for task, err in c:each_completed(ids, { interval = 0.05, max_interval = 0.1 }) do
          assert(task.ok, tostring(err))
          saved = saved + #assert(c:download(task, { dir = a.dir }))
        end
        -- which client the ledger used: the Redis store's connection holds a hiredis one
        -- only when it did not run on cosockets
        local L = c.ledger
        local via = L.prefix and (L.db.conn and "hiredis" or "cosockets") or "sqlite"
        c:close()
        ngx.say(ngx.worker.pid(), " ", saved, " ", via)
      }
    }
]],
    })
  end)

  teardown(function()
    if app then app.stop() end
    if env then env:stop() end
    if dir then fe.rmdir(dir) end
  end)

  -- Four requests at once on the two workers with ledger `target`; then the ledger, read from
  -- this process, has every intent, task and file. via: the client the ledger used in nginx.
  local function run(target, via)
    local url = app.url .. "/work?n=5&base=" .. env.base.tripo .. "&ledger=" .. fe.escape(target) .. "&dir=" .. dir .. "/" .. via
    os.execute("mkdir -p " .. fe.q(dir .. "/" .. via) .. " && chmod 0777 " .. fe.q(dir .. "/" .. via))
    local cmds = {}
    for i = 1, 4 do cmds[i] = "curl -s -m 60 " .. fe.q(url) .. " >" .. fe.q(dir .. "/r" .. i) end
    os.execute("(" .. table.concat(cmds, " & ") .. " & wait)")
    local pids = {}
    for i = 1, 4 do
      local body = fe.read(dir .. "/r" .. i) or ""
      local pid, saved, used = body:match("^(%d+) (%d+) (%a+)")
      assert(pid, "request " .. i .. " answered: " .. body .. "\n" .. app.log())
      assert.equal("10", saved)
      assert.equal(via, used)
      pids[pid] = true
    end
    local L = assert(ledger.open(target))
    local intents = L:intents { provider = "tripo" }
    assert.equal(20, #intents)
    for _, it in ipairs(intents) do assert.equal("created", it.outcome) end
    local tasks = L:tasks { provider = "tripo" }
    assert.equal(20, #tasks)
    for _, t in ipairs(tasks) do
      assert.equal("succeeded", t.state)
      assert.same({}, t.unsaved)
      for _, o in ipairs(t.outputs) do
        local f = t.files[o.name]
        assert.equal(1, f.saves)
        assert.is_true(fe.read(f.path) == fe.expected_bytes(t.id, o.name, 3000), f.path)
      end
    end
    L:close()
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    print("\n" .. via .. ": workers that answered: " .. n)
    assert.equal("", (app.log():match("%[error%][^\n]*") or ""))
  end

  it("records every create, state and file of concurrent requests on both workers (SQLite)", function()
    run(dir .. "/ledger.db", "sqlite")
  end)

  it("the same with a Redis ledger, through resty.redis on cosockets", function()
    local srv = assert(rs.start { ttl = 300 })
    local ok, err = pcall(run, srv.url("nginx"), "cosockets")
    srv.stop()
    assert(ok, err)
  end)
end)
