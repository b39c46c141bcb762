-- The task ledger: taskapi.core's SQLite binding (sqlite.c), taskapi.ledger on its two stores
-- (a SQLite file in WAL mode; Redis, spec/support/redis.lua's private redis-server), and a
-- client with a ledger against the nginx fake through the real C module: the intent before
-- each create and its outcome (created, refused, indeterminate), states and the compact final
-- task, files saved, reconcile (Tripo V3 usage), resume (waits, skips what is on disk, saves
-- what is not), the CLI's tasks and resume. One list of cases runs against both stores
-- (STORES), and one sequence of calls gives equal records on both; then what only one store
-- has: WAL and the schema's PRAGMA (SQLite), Redis down, restarted, killed (Redis). Run under
-- valgrind by spec/memcheck.sh.
local fe = require "support.fake_env"
local cjson = require "cjson"
local core = require "taskapi.core"
local ledger = require "taskapi.ledger"
local redis = require "taskapi.util.redis"
local rs = require "support.redis"
local taskapi = require "taskapi"

local LUA = jit and "luajit" or "lua5.4"

local function curl_json(method, url, body, key)
  local cmd = "curl -s -X " .. method .. " "
  if key then cmd = cmd .. "-H " .. fe.q("Authorization: Bearer " .. key) .. " " end
  if body then cmd = cmd .. "-H 'Content-Type: application/json' --data-binary " .. fe.q(body) .. " " end
  return cjson.decode(fe.sh(cmd .. fe.q(url)))
end

local function sqlite(path, sql)
  return fe.sh("sqlite3 " .. fe.q(path) .. " " .. fe.q(sql))
end

-- the states of events, joined by commas
local function states(events)
  local s = {}
  for i, e in ipairs(events) do s[i] = e.state end
  return table.concat(s, ",")
end

-- This file's redis-server, started when a case first needs it.
local server
local function redis_server()
  if not server then server = assert(rs.start { ttl = 1200 }) end
  return server
end
teardown(function() if server then server.stop() end end)

-- A stored field of a task, read from the store itself (not through the ledger).
local function redis_field(url, provider, id, field)
  local r = assert(redis.connect(url))
  local prefix = redis.parse(url).prefix
  local v = r:call("HGET", prefix .. ":task:" .. provider .. ":" .. id, field)
  r:close()
  return v ~= redis.null and v or nil
end

-- The stores every shared case runs against: make(dir) gives a new ledger's path or URL.
local STORES = {
  { name = "SQLite", make = function(dir) return dir .. "/l.db" end,
    field = function(path, provider, id, field)
      return sqlite(path, "SELECT " .. field .. " FROM tasks WHERE provider = '" .. provider .. "' AND id = '" .. id .. "'")
    end },
  { name = "Redis", make = function() return redis_server().url() end, field = redis_field },
}

describe("taskapi.core sqlite", function()
  local dir
  before_each(function() dir = fe.tmpdir() end)
  after_each(function() fe.rmdir(dir) end)

  it("binds and reads back every type, integers exact", function()
    local db = assert(core.sqlite_open(dir .. "/t.db"))
    assert.is_true(db:exec("CREATE TABLE t (a, b, c, d, e)"))
    local big = 9007199254740991 -- 2^53 - 1
    assert.same({}, db:query("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)", big, 1.5, "a\0b", true, nil))
    assert.equal(1, db:changes())
    local r = db:query("SELECT a, b, c, d, e, typeof(a) ta, typeof(e) te FROM t")[1]
    assert.equal(big, r.a)
    if math.type then assert.equal("integer", math.type(r.a)) end
    assert.equal(1.5, r.b)
    assert.equal("a\0b", r.c)
    assert.equal(1, r.d)
    assert.is_nil(r.e)
    assert.equal("integer", r.ta)
    assert.equal("null", r.te)
    db:close()
  end)

  it("gives io errors with SQLite's code, refuses bad calls clearly", function()
    local db = assert(core.sqlite_open(dir .. "/t.db"))
    local rows, err = db:query("SELECT * FROM nowhere")
    assert.is_nil(rows)
    assert.equal("io", err.kind)
    assert.matches("no such table: nowhere", err.message)
    assert.equal(1, err.code) -- SQLITE_ERROR
    rows, err = db:query("SELECT 1; SELECT 2")
    assert.is_nil(rows)
    assert.equal("invalid_argument", err.kind)
    rows, err = db:query("SELECT ?1, ?2", 1)
    assert.is_nil(rows)
    assert.matches("1 values for 2 parameters", err.message)
    rows, err = db:query("SELECT ?1", {})
    assert.is_nil(rows)
    assert.matches("value 1 is a table", err.message)
    assert.same({ { x = 7 } }, db:query("SELECT ?1 AS x", 7)) -- the connection still works
    assert.is_true(db:close())
    assert.is_true(db:close()) -- idempotent
    assert.has_error(function() db:query("SELECT 1") end, "taskapi.core: sqlite database is closed")
    assert.matches("closed", tostring(db))
    local bad, berr = core.sqlite_open(dir .. "/no/such/dir/t.db")
    assert.is_nil(bad)
    assert.equal("io", berr.kind)
    assert.matches("unable to open", berr.message)
  end)

  it("does not follow a symbolic link to the database", function()
    assert(core.sqlite_open(dir .. "/real.db")):close()
    os.execute("ln -s " .. fe.q(dir .. "/real.db") .. " " .. fe.q(dir .. "/link.db"))
    local db, err = core.sqlite_open(dir .. "/link.db")
    assert.is_nil(db)
    assert.equal("io", err.kind)
  end)

  it("file_stat: size and mtime of a regular file, nil otherwise", function()
    fe.write(dir .. "/f", "12345")
    local size, mtime = core.file_stat(dir .. "/f")
    assert.equal(5, size)
    assert.is_true(math.abs(mtime - os.time()) < 5)
    assert.is_nil(core.file_stat(dir))
    assert.is_nil(core.file_stat(dir .. "/none"))
    os.execute("ln -s " .. fe.q(dir .. "/f") .. " " .. fe.q(dir .. "/l"))
    assert.is_nil(core.file_stat(dir .. "/l"))
  end)
end)

describe("taskapi.ledger", function()
  it("digests parameters whatever their order; FNV-1a vectors", function()
    local a = ledger.digest({ prompt = "cat", n = 1, opt = { x = 1, y = 2 } })
    local b = ledger.digest({ opt = { y = 2, x = 1 }, n = 1, prompt = "cat" })
    assert.equal(a, b)
    assert.are_not.equal(a, ledger.digest({ prompt = "dog", n = 1, opt = { x = 1, y = 2 } }))
    assert.matches(core.sha256 and "^sha256:%x+$" or "^fnv1a:%x+$", a)
    -- the published FNV-1a 32-bit vectors
    assert.equal(0x811c9dc5, ledger._fnv1a32("", 2166136261))
    assert.equal(0xe40c292c, ledger._fnv1a32("a", 2166136261))
    assert.equal(0xbf9cf968, ledger._fnv1a32("foobar", 2166136261))
  end)

  it("opens a redis:// URL as the Redis store, anything else as a SQLite file", function()
    local dir = fe.tmpdir()
    local a = assert(ledger.open(dir .. "/l.db"))
    local b = assert(ledger.open(redis_server().url()))
    assert.equal(require("taskapi.ledger.sqlite").Store, getmetatable(a))
    assert.equal(require("taskapi.ledger.redis").Store, getmetatable(b))
    assert.is_true(ledger.is_ledger(a) and ledger.is_ledger(b))
    assert.matches("^taskapi ledger %(redis://127%.0%.0%.1:%d+/0%?prefix=", tostring(b))
    a:close()
    b:close()
    fe.rmdir(dir)
  end)
end)

for _, store in ipairs(STORES) do
  describe("taskapi.ledger on " .. store.name, function()
    local dir
    before_each(function() dir = fe.tmpdir() end)
    after_each(function() fe.rmdir(dir) end)

    it("reopens what it wrote", function()
      local path = store.make(dir)
      local L = assert(ledger.open(path))
      local rid = assert(L:before_create("tripo", "text_to_model", "/generation/text-to-model", { prompt = "x" }))
      assert.matches("^%x+$", rid)
      L:close()
      L = assert(ledger.open(path))
      local its = L:intents()
      assert.equal(1, #its)
      assert.equal("open", its[1].outcome)
      assert.equal("text_to_model", its[1].type)
      assert.equal("/generation/text-to-model", its[1].endpoint)
      assert.equal(ledger.digest({ prompt = "x" }), its[1].digest)
      assert.equal(rid, its[1].rid)
      assert.same({ "intent" }, { states(L:events { task_id = rid }) })
      L:close()
    end)

    it("records a task's changes of state once each, and its compact final record", function()
      local path = store.make(dir)
      local L = assert(ledger.open(path))
      local t = { id = "t1", provider = "tripo", state = "queued", done = false, ok = false, outputs = {}, raw = { big = 1 } }
      assert.is_true(L:task_seen(t))
      assert.is_true(L:task_seen(t)) -- no change: no write
      t.state, t.progress = "running", 40
      L:task_seen(t)
      t.progress = 60
      L:task_seen(t) -- progress only: no event
      t.state, t.done, t.ok, t.progress = "succeeded", true, true, 100
      t.outputs = { { name = "model", url = "http://h/m.glb", kind = "model" } }
      t.credits, t.created_at = 20, 1700000000
      L:task_seen(t)
      assert.equal("queued,running,succeeded", states(L:events()))
      assert.equal(40, L:events()[2].progress)
      local r = L:get("t1")
      assert.equal("succeeded", r.state)
      assert.is_true(r.done and r.ok)
      assert.equal(20, r.credits)
      assert.equal("http://h/m.glb", r.outputs[1].url)
      assert.same({ "model" }, r.unsaved)
      assert.is_true(r.pending)
      local stored = store.field(path, "tripo", "t1", "task")
      assert.matches('"state":"succeeded"', stored, 1, true)
      assert.is_nil(stored:find("raw", 1, true))
      assert.equal(1, #L:tasks { pending = true })
      assert.equal(0, #L:tasks { state = "failed" })
      assert.is_nil(L:get("nope"))
      L:close()
      for _, call in ipairs({
        function() return L:tasks() end, function() return L:get("t1") end, function() return L:intents() end,
        function() return L:files("t1") end, function() return L:ids("tripo") end, function() return L:events() end,
        function() return L:before_create("tripo", "x", nil, {}) end,
      }) do
        local none, cerr = call()
        assert.is_nil(none)
        assert.matches("the ledger is closed", cerr.message)
      end
      assert.is_true(L:close()) -- idempotent
    end)

    it("checks its filters", function()
      local L = assert(ledger.open(store.make(dir)))
      local r, err = L:tasks { bogus = 1 }
      assert.is_nil(r)
      assert.matches("unknown filter 'bogus'", err.message)
      r, err = L:intents("x")
      assert.matches("expects a filter table", err.message)
      r, err = L:get(5)
      assert.matches("expects a task id", err.message)
      r, err = L:events { state = "x" }
      assert.matches("unknown filter 'state'", err.message)
      L:close()
    end)

    it("keeps every write of three processes sharing it", function()
      local path = store.make(dir)
      assert(ledger.open(path)):close()
      local script = dir .. "/w.lua"
      fe.write(script, [[
        package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
        package.cpath = "./build/]] .. LUA .. [[/?.so;" .. package.cpath
        local opts = arg[1]:match("^redis://") and {} or { synchronous = "normal" }
        local L = assert(require("taskapi.ledger").open(arg[1], opts))
        for i = 1, 150 do
          assert(L:before_create("tripo", "text_to_model", nil, { i = i, who = arg[2] }))
          assert(L:task_seen({ id = arg[2] .. i, provider = "tripo", state = "queued", outputs = {} }))
        end
        L:close()
      ]])
      local cmd = LUA .. " " .. fe.q(script) .. " " .. fe.q(path)
      local out = fe.sh("(" .. cmd .. " a & " .. cmd .. " b & " .. cmd .. " c & wait) 2>&1")
      assert.equal("", out)
      local L = assert(ledger.open(path))
      local its = L:intents()
      assert.equal(450, #its)
      local rids, seqs = {}, {}
      for _, it in ipairs(its) do rids[it.rid], seqs[it.seq] = true, true end
      local n, m = 0, 0
      for _ in pairs(rids) do n = n + 1 end
      for _ in pairs(seqs) do m = m + 1 end
      assert.equal(450, n)
      assert.equal(450, m)
      assert.equal(450, #L:tasks())
      assert.equal(900, #L:events())
      L:close()
    end)
  end)
end

describe("the two stores", function()
  -- One sequence of calls on each store; the records, queries and their order are compared
  -- (request ids, times and the files' paths aside).
  local function play(path, dir)
    local L = assert(ledger.open(path))
    local r1 = assert(L:before_create("tripo", "text_to_model", "/generation/text-to-model", { prompt = "a" }))
    assert(L:after_create(r1, "tripo", "text_to_model", "same-id"))
    local r2 = assert(L:before_create("sellerpic", "instructEdit", "/generate/instructEdit", { prompt = "b" }))
    assert(L:after_create(r2, "sellerpic", "instructEdit", nil, { message = "refused: no", kind = "auth" }))
    local r3 = assert(L:before_create("tripo", "image_to_model", nil, { prompt = "c" }))
    assert(L:after_create(r3, "tripo", "image_to_model", nil, { message = "maybe", indeterminate = true }))
    local r4 = assert(L:before_create("tripo", "text_to_model", nil, { prompt = "d" })) -- left open
    assert(L:reconciled(r3, "tripo", "found-id", "image_to_model"))
    local again, aerr = L:reconciled(r4, "tripo", "found-id", "text_to_model")
    assert.is_nil(again)
    assert.matches("task found%-id is already in the ledger", aerr.message)
    local t = { id = "same-id", provider = "tripo", state = "running", progress = 10, done = false, ok = false, outputs = {} }
    assert(L:task_seen(t))
    t.state, t.done, t.ok, t.progress = "succeeded", true, true, nil
    t.outputs = { { name = "model", url = "http://h/m", kind = "model" }, { name = "image", url = "http://h/i" } }
    t.credits, t.completed_at, t.type = 12.5, 1700000100, "text_to_model"
    assert(L:task_seen(t))
    -- the same id at another provider, only waited on
    assert(L:task_seen({ id = "same-id", provider = "sellerpic", state = "failed", done = true, ok = false, outputs = {},
      error = { code = 7, message = "bad image" } }))
    fe.write(dir .. "/m.glb", "model bytes")
    fe.write(dir .. "/i.png", "image bytes!")
    assert(L:files_saved(t, { { name = "model", path = dir .. "/m.glb" } }))
    assert(L:files_saved(t, { { name = "image", path = dir .. "/i.png" } }, true)) -- adopted
    assert(L:files_saved(t, { { name = "model", path = dir .. "/m.glb" } }))       -- saved again
    assert(L:files_saved(t, { { name = "image", path = dir .. "/i.png" } }, true)) -- adopted again
    local out = {
      tasks = L:tasks(), pending = L:tasks { pending = true }, done = L:tasks { pending = false },
      tripo = L:tasks { provider = "tripo" }, failed = L:tasks { state = "failed" },
      get = L:get("same-id"), get_s = L:get("same-id", "sellerpic"), none = { L:get("none") },
      intents = L:intents(), ind = L:intents { indeterminate = true }, refused = L:intents { outcome = "refused" },
      open = L:intents { outcome = "open", provider = "tripo" },
      files = L:files("same-id"), files_t = L:files("same-id", "tripo"), ids = L:ids("tripo"), ids_s = L:ids("sellerpic"),
      events = L:events(), events_t = L:events { task_id = "same-id", provider = "tripo" },
    }
    L:close()
    -- what differs by nature: request ids, times, the folder
    local rids = { [r1] = "r1", [r2] = "r2", [r3] = "r3", [r4] = "r4" }
    local function scrub(v)
      if type(v) ~= "table" then return v end
      local o = {}
      for k, x in pairs(v) do
        if k == "at" or k == "first_at" or k == "updated_at" or k == "settled_at" or k == "mtime" then
          o[k] = type(x) == "number" and "time" or x
        elseif k == "path" then o[k] = x:sub(#dir + 1)
        elseif type(x) == "string" and rids[x] then o[k] = rids[x]
        else o[k] = scrub(x) end
      end
      return o
    end
    return scrub(out)
  end

  it("keep the same records and answer the same queries in the same order", function()
    local d1, d2 = fe.tmpdir(), fe.tmpdir()
    local a = play(d1 .. "/l.db", d1)
    local b = play(redis_server().url(), d2)
    assert.same(a, b)
    -- and they are what the calls said
    assert.equal(3, #a.tasks)
    assert.same({ "tripo same-id", "tripo found-id", "sellerpic same-id" }, { a.tasks[1].provider .. " " .. a.tasks[1].id,
      a.tasks[2].provider .. " " .. a.tasks[2].id, a.tasks[3].provider .. " " .. a.tasks[3].id })
    assert.equal("succeeded", a.get.state)
    assert.equal(2, a.get.files.model.saves)
    assert.equal(1, a.get.files.image.saves)
    assert.equal(1, a.get.files.image.adopted)
    assert.equal("failed", a.get_s.state)
    assert.equal(7, a.get_s.error.code)
    assert.equal(2, #a.files) -- by provider, then name
    assert.same({ "image", "model" }, { a.files[1].name, a.files[2].name })
    assert.same({ "open", "r4" }, { a.open[1].outcome, a.open[1].rid })
    assert.same({ "r1", "r2", "r3", "r4" }, { a.intents[1].rid, a.intents[2].rid, a.intents[3].rid, a.intents[4].rid })
    assert.equal("reconciled", a.intents[3].outcome)
    assert.equal("found-id", a.intents[3].task_id)
    assert.equal("intent,created,intent,refused,intent,indeterminate,intent,reconciled,running,succeeded,failed",
      states(a.events))
    if math.type then -- integers where SQLite gives integers
      assert.equal("integer", math.type(b.get.files.model.bytes))
      assert.equal("integer", math.type(b.intents[1].seq))
      assert.equal("integer", math.type(b.events[1].seq))
    end
    fe.rmdir(d1)
    fe.rmdir(d2)
  end)
end)

describe("taskapi.ledger (SQLite file only)", function()
  local dir
  before_each(function() dir = fe.tmpdir() end)
  after_each(function() fe.rmdir(dir) end)

  it("opens in WAL mode with the schema's version", function()
    local path = dir .. "/l.db"
    local L = assert(ledger.open(path))
    assert.equal("wal", sqlite(path, "PRAGMA journal_mode"))
    assert.equal(tostring(ledger.SCHEMA), sqlite(path, "PRAGMA user_version"))
    assert(L:before_create("tripo", "text_to_model", nil, {}))
    assert.equal("intent", sqlite(path, "SELECT group_concat(state) FROM events"))
    L:close()
  end)

  it("refuses a ledger written by a newer schema, and bad arguments", function()
    local path = dir .. "/l.db"
    assert(ledger.open(path)):close()
    sqlite(path, "PRAGMA user_version = 99")
    local L, err = ledger.open(path)
    assert.is_nil(L)
    assert.matches("schema version 99 is newer", err.message)
    L, err = ledger.open("")
    assert.equal("invalid_argument", err.kind)
    L, err = ledger.open(dir .. "/x.db", { sync = "off" })
    assert.matches("unknown option 'sync'", err.message)
    fe.write(dir .. "/junk.db", string.rep("not a database ", 100))
    L, err = ledger.open(dir .. "/junk.db")
    assert.is_nil(L)
    assert.equal("io", err.kind)
  end)
  it("opens a new file that six processes open at the same moment (the WAL switch waits)", function()
    -- Switching a fresh file to WAL while other processes open it answered "database is
    -- locked" at once, without the busy timeout (about 1 open in 500 under load: the OpenResty
    -- ledger spec failed that way in CI). Forty fresh files, six openers each.
    local script = dir .. "/o.lua"
    fe.write(script, [[
      package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
      package.cpath = "./build/]] .. LUA .. [[/?.so;" .. package.cpath
      local L, err = require("taskapi.ledger").open(arg[1])
      if not L then print("FAIL " .. tostring(err)) os.exit(1) end
      L:close()
    ]])
    local cmds = {}
    for r = 1, 40 do
      local one = LUA .. " " .. fe.q(script) .. " " .. fe.q(dir .. "/race" .. r .. ".db")
      cmds[r] = "(" .. table.concat({ one, one, one, one, one, one }, " & ") .. " & wait)"
    end
    local out = fe.sh("(" .. table.concat(cmds, "; ") .. ") 2>&1")
    assert.equal("", out)
    for r = 1, 40 do assert.equal("wal", sqlite(dir .. "/race" .. r .. ".db", "PRAGMA journal_mode")) end
  end)
end)


describe("taskapi.ledger on Redis only", function()
  local dir
  before_each(function() dir = fe.tmpdir() end)
  after_each(function() fe.rmdir(dir) end)

  -- one of every method, observer and reader, with arguments that would work
  local function every_call(L)
    local task = { id = "t9", provider = "tripo", state = "running", outputs = {} }
    fe.write(dir .. "/f", "x")
    return {
      before_create = function() return L:before_create("tripo", "text_to_model", nil, { p = 1 }) end,
      after_create = function() return L:after_create("r", "tripo", "text_to_model", "t9") end,
      task_seen = function() L.seen = {} return L:task_seen(task) end,
      files_saved = function() return L:files_saved(task, { { name = "model", path = dir .. "/f" } }) end,
      reconciled = function() return L:reconciled("r", "tripo", "t10", "text_to_model") end,
      tasks = function() return L:tasks() end,
      pending = function() return L:tasks { pending = true, provider = "tripo" } end,
      get = function() return L:get("t9") end,
      get_p = function() return L:get("t9", "tripo") end,
      intents = function() return L:intents { indeterminate = true } end,
      files = function() return L:files("t9") end,
      ids = function() return L:ids("tripo") end,
      events = function() return L:events() end,
    }
  end

  it("keeps every key under its prefix; two prefixes are two ledgers", function()
    local srv = redis_server()
    local url = srv.url("pfx" .. math.random(1, 1e9))
    local prefix = redis.parse(url).prefix
    local L = assert(ledger.open(url))
    for _, call in pairs(every_call(L)) do call() end
    local r = assert(redis.connect(url))
    local keys = r:call("KEYS", prefix .. ":*")
    assert.is_true(#keys >= 10)
    local other = assert(ledger.open(srv.url()))
    assert.same({}, other:tasks())
    assert.same({}, other:intents())
    local oprefix = redis.parse(other.path).prefix
    for _, k in ipairs(r:call("KEYS", "*")) do
      assert.is_truthy(k:sub(1, #prefix + 1) == prefix .. ":" or k:find("^t%d+x%d+:") or k:find("^pfx%d+:"), k)
    end
    assert.same({}, r:call("KEYS", oprefix .. ":task:*"))
    r:close()
    L:close()
    other:close()
  end)

  it("refuses a newer schema, a bad URL and unknown options", function()
    local url = redis_server().url()
    assert(ledger.open(url)):close()
    local r = assert(redis.connect(url))
    r:call("SET", redis.parse(url).prefix .. ":schema", "99")
    r:close()
    local L, err = ledger.open(url)
    assert.is_nil(L)
    assert.matches("schema version 99 is newer", err.message)
    L, err = ledger.open("redis://127.0.0.1:port/0")
    assert.equal("invalid_argument", err.kind)
    assert.matches("the port 'port' is not a number", err.message)
    L, err = ledger.open(redis_server().url(), { synchronous = "normal" })
    assert.equal("invalid_argument", err.kind)
    assert.matches("unknown option 'synchronous' (known: timeout)", err.message, 1, true)
  end)

  it("Redis down: open and every method answer nil, err kind transport naming Redis; back up, it works again", function()
    local own = assert(rs.start { ttl = 120 })
    local url = own.url()
    local L = assert(ledger.open(url .. "&timeout=2"))
    local calls = every_call(L)
    own.kill()
    local where = "redis 127.0.0.1:" .. own.port .. ": "
    for name, call in pairs(calls) do
      local v, err = call()
      assert.is_nil(v, name)
      assert.equal("transport", err.kind, name)
      assert.is_true(err.retryable, name)
      assert.matches("^ledger: [%w ]+: " .. where:gsub("%p", "%%%0"), err.message)
      assert.is_nil(tostring(err):find("test-key", 1, true))
    end
    local none, oerr = ledger.open(url)
    assert.is_nil(none)
    assert.equal("transport", oerr.kind)
    assert.matches(where .. "connection refused", oerr.message, 1, true)
    own.restart()
    assert.is_string(calls.before_create())
    assert.is_true(calls.task_seen())
    assert.equal(1, #L:tasks())
    L:close()
    own.stop()
  end)

  for _, how in ipairs({ "restart", "kill" }) do
    it("keeps everything it acknowledged across a Redis " .. (how == "kill" and "kill -9 and restart" or "restart") ..
      " (appendonly yes)", function()
      local own = assert(rs.start { ttl = 120 })
      local url = own.url()
      local L = assert(ledger.open(url))
      local rids = {}
      for i = 1, 200 do
        rids[i] = assert(L:before_create("tripo", "text_to_model", nil, { i = i }))
        assert(L:after_create(rids[i], "tripo", "text_to_model", "task" .. i))
        assert(L:task_seen({ id = "task" .. i, provider = "tripo", state = "succeeded", done = true, ok = true,
          outputs = { { name = "model", url = "http://h/" .. i } } }))
      end
      fe.write(dir .. "/m", "bytes")
      assert(L:files_saved({ id = "task200", provider = "tripo" }, { { name = "model", path = dir .. "/m" } }))
      local before = { tasks = L:tasks(), intents = L:intents(), events = L:events() }
      if how == "kill" then own.kill() own.restart() else own.restart() end
      -- the same ledger object reconnects by itself (its first call after the restart may
      -- meet the closed connection)
      local after = L:tasks()
      if not after then after = assert(L:tasks()) end
      assert.same(before.tasks, after)
      assert.same(before.intents, L:intents())
      assert.same(before.events, L:events())
      assert.equal(200, #after)
      assert.equal(5, after[200].files.model.bytes)
      -- and the order goes on where it was
      local rid = assert(L:before_create("tripo", "text_to_model", nil, { i = 201 }))
      local evs = L:events()
      assert.equal(601, evs[#evs].seq)
      assert.equal(rid, evs[#evs].task_id)
      L:close()
      own.stop()
    end)
  end

  it("a client whose Redis is down sends no create (the intent cannot be recorded)", function()
    local env = fe.start()
    local own = assert(rs.start { ttl = 120 })
    local c = env:client("tripo", { ledger = own.url() })
    own.kill()
    local before = curl_json("GET", env.url .. "/_fake/stats").creates.tripo or 0
    local id, err = c:create({ type = "text_to_model", model_version = "v3.1-20260211", prompt = "x" })
    assert.is_nil(id)
    assert.equal("transport", err.kind)
    assert.matches("redis 127.0.0.1:" .. own.port, err.message, 1, true)
    assert.equal(before, curl_json("GET", env.url .. "/_fake/stats").creates.tripo or 0)
    c:close()
    own.stop()
    env:stop()
  end)
end)

for _, store in ipairs(STORES) do
describe("a client with a ledger on " .. store.name .. " (nginx fake, real HTTP)", function()
  local env, dir
  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)
  before_each(function() dir = fe.tmpdir() end)
  after_each(function()
    curl_json("DELETE", env.url .. "/_fake/faults")
    fe.rmdir(dir)
  end)

  local PARAMS = {
    tripo = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a cat" },
    sellerpic = { type = "instructEdit", prompt = "white background" },
  }
  local function params(p, fake)
    local t = {}
    for k, v in pairs(PARAMS[p]) do t[k] = v end
    t.fake = fake or { queue = 0, run = 0, file_size = 5000 }
    return t
  end
  local function stats(p)
    local s = curl_json("GET", env.url .. "/_fake/stats")
    return s.creates[p] or 0, s.created[p] or 0
  end
  local FAST = { interval = 0.05, max_interval = 0.1, timeout = 20 }

  for _, p in ipairs({ "tripo", "sellerpic" }) do
    it(p .. ": intent, outcome, states, final task and files, each committed", function()
      local path = store.make(dir)
      local c = env:client(p, { ledger = path })
      assert.equal(path, c.ledger.path)
      local id = assert(c:create(params(p, { queue = 0.2, run = 0.3, file_size = 5000 })))
      -- committed: another connection sees it at once
      local other = assert(ledger.open(path))
      local its = other:intents()
      assert.equal(1, #its)
      assert.equal("created", its[1].outcome)
      assert.equal(id, its[1].task_id)
      local rec = other:get(id, p)
      assert.equal("queued", rec.state)
      assert.is_false(rec.done)
      local task = assert(c:wait(id, FAST))
      assert.is_true(task.ok)
      assert.matches("^created,.*succeeded$", states(other:events { task_id = id }))
      other:close()
      local L = c.ledger
      local r = L:get(id, p)
      assert.equal(#task.outputs, #r.outputs)
      assert.equal(task.outputs[1].name, r.outputs[1].name)
      assert.equal(#task.outputs, #r.unsaved)
      local files = assert(c:download(task, { dir = dir }))
      r = L:get(id, p)
      assert.same({}, r.unsaved)
      assert.is_false(r.pending)
      for _, f in ipairs(files) do
        local row = r.files[f.name]
        assert.equal(f.path, row.path)
        assert.equal(5000, row.bytes)
        assert.equal(1, row.saves)
        assert.equal(fe.sha256(f.path), row.sha256)
        assert.is_number(row.mtime)
        assert.is_true(row.intact)
      end
      assert.equal(0, #L:tasks { pending = true, provider = p })
      -- touched: the same bytes still count (by SHA-256); other bytes of the same size do not
      local f1 = files[1].path
      os.execute("touch -d '2020-01-01 00:00:00' " .. fe.q(f1))
      assert.is_true(L:get(id, p).files[files[1].name].intact)
      fe.write(f1, string.rep("x", 5000))
      assert.is_false(L:get(id, p).files[files[1].name].intact)
      assert.equal(1, #L:tasks { pending = true, provider = p })
      c:close()
      assert.is_nil(c.ledger.db) -- a ledger opened from a path is closed with the client
    end)

    it(p .. ": a refused create is recorded refused; an unknown failure indeterminate", function()
      local path = store.make(dir)
      local bad = env:client(p, { ledger = path, api_key = "wrong-key" })
      local id, err = bad:create(params(p))
      assert.is_nil(id)
      assert.equal("auth", err.kind)
      local refused_msg = err.message
      local c = env:client(p, { ledger = path, retries = 3, timeout = 2 })
      curl_json("POST", env.url .. "/_fake/faults", cjson.encode({ on = "create", provider = p, fault = "status_500",
        count = 1, created = true }))
      id, err = c:create(params(p))
      assert.is_nil(id)
      assert.is_true(err.indeterminate)
      local L = c.ledger
      local its = L:intents { provider = p }
      assert.equal(2, #its)
      assert.equal("refused", its[1].outcome)
      assert.equal(refused_msg, its[1].error)
      assert.equal("indeterminate", its[2].outcome)
      assert.equal(1, #L:intents { provider = p, indeterminate = true })
      assert.equal(0, #L:tasks { provider = p })
      bad:close()
      c:close()
    end)

    it(p .. ": no request when the intent cannot be recorded", function()
      local L = assert(ledger.open(store.make(dir)))
      local c = env:client(p, { ledger = L })
      L:close()
      local posts = stats(p)
      local id, err = c:create(params(p))
      assert.is_nil(id)
      assert.equal("io", err.kind)
      assert.matches("ledger", err.message)
      assert.equal(posts, (stats(p)))
    end)
  end

  it("tripo: reconcile finds the task of an indeterminate create and of an open intent; resume saves them", function()
    local path = store.make(dir)
    local c = env:client("tripo", { ledger = path, timeout = 2 })
    local known = assert(c:create(params("tripo")))
    curl_json("POST", env.url .. "/_fake/faults", cjson.encode({ on = "create", provider = "tripo", fault = "status_500",
      count = 1, created = true }))
    local id, err = c:create(params("tripo"))
    assert.is_nil(id)
    assert.is_true(err.indeterminate)
    -- a process killed after its intent was committed and the POST sent: the intent stays open
    local rid = assert(c.ledger:before_create("tripo", "text-to-model", "/generation/text-to-model", {}))
    local orphan = curl_json("POST", env.base.tripo .. "/generation/text-to-model", cjson.encode({
      model_version = "v3.1-20260211", prompt = "lost", fake = { queue = 0, run = 0, file_size = 5000 } }), fe.KEY)
    -- an open intent that may still be in flight elsewhere is left alone by default
    local r = assert(c:reconcile())
    assert.equal(1, #r.found)
    assert.equal(1, #r.left)
    assert.equal("open", r.left[1].outcome)
    r = assert(c:reconcile { min_age = 0 })
    assert.equal(1, #r.found)
    assert.equal(rid, r.found[1].rid)
    assert.equal(orphan.data.task_id, r.found[1].task_id)
    local ids = {}
    for _, t in ipairs(c.ledger:tasks { provider = "tripo" }) do ids[#ids + 1] = t.id end
    assert.equal(3, #ids)
    assert.equal(known, ids[1])
    assert.equal(0, #c.ledger:intents { indeterminate = true })
    -- nothing is found twice
    assert.equal(0, #assert(c:reconcile { min_age = 0 }).found)
    local resume_opts = { dir = dir }
    for k, v in pairs(FAST) do resume_opts[k] = v end
    local tasks, errs, files = assert(c:resume(resume_opts))
    assert.same({}, errs)
    for _, tid in ipairs(ids) do
      assert.is_true(tasks[tid].ok)
      assert.equal(2, #files[tid])
    end
    assert.equal(0, #c.ledger:tasks { pending = true })
  end)

  it("sellerpic: reconcile leaves indeterminate intents listed (no listing of tasks)", function()
    local c = env:client("sellerpic", { ledger = store.make(dir), timeout = 2 })
    curl_json("POST", env.url .. "/_fake/faults", cjson.encode({ on = "create", provider = "sellerpic", fault = "no_id",
      count = 1 }))
    local id, err = c:create(params("sellerpic"))
    assert.is_nil(id)
    assert.is_true(err.indeterminate)
    local r = assert(c:reconcile { min_age = 0 })
    assert.equal(0, #r.found)
    assert.equal(1, #r.left)
    assert.equal("indeterminate", r.left[1].outcome)
  end)

  it("resume: waits for unfinished tasks, keeps intact files, saves missing ones, finds unrecorded complete ones", function()
    local path = store.make(dir)
    local c = env:client("tripo", { ledger = path })
    local a = assert(c:create(params("tripo")))             -- finished, saved: kept
    local b = assert(c:create(params("tripo")))             -- finished, a file deleted: saved again
    local d = assert(c:create(params("tripo")))             -- finished, complete on disk, unrecorded: found
    local e = assert(c:create(params("tripo", { queue = 0.2, run = 0.4, file_size = 5000 }))) -- still running
    for _, x in ipairs({ a, b, d }) do
      local t = assert(c:wait(x, FAST))
      if x ~= d then assert(c:download(t, { dir = dir })) end
    end
    local bfile = c.ledger:get(b).files.model.path
    os.remove(bfile)
    -- d's files written as a killed process would have left them: complete, renamed, unrecorded
    local plain = env:client("tripo")
    assert(plain:download(d, { dir = dir }))
    local mark = env:mark()
    local opts = { dir = dir }
    for k, v in pairs(FAST) do opts[k] = v end
    local tasks, errs, files = assert(c:resume(opts))
    assert.same({}, errs)
    assert.is_nil(tasks[a]) -- nothing left to do for a
    assert.is_true(tasks[b].ok and tasks[d].ok and tasks[e].ok)
    local how = {}
    for _, tid in ipairs({ b, d, e }) do
      for _, f in ipairs(files[tid]) do how[tid .. " " .. f.name] = f.skipped and "kept" or f.adopted and "found" or "saved" end
    end
    assert.equal("saved", how[b .. " model"])
    assert.equal("kept", how[b .. " rendered_image"])
    assert.equal("found", how[d .. " model"])
    assert.equal("found", how[d .. " rendered_image"])
    assert.equal("saved", how[e .. " model"])
    -- file host GETs: b's model and e's two outputs only
    local gets = fe.file_requests(env:log(mark))
    assert.equal(3, #gets)
    assert.equal(2, c.ledger:get(b).files.model.saves)
    assert.equal(1, c.ledger:get(d).files.model.adopted)
    assert.equal(1, c.ledger:get(d).files.model.saves)
    assert.equal(0, #c.ledger:tasks { pending = true })
    -- a second resume has nothing to do
    tasks, errs = assert(c:resume(opts))
    assert.same({}, tasks)
    assert.same({}, errs)
  end)

  it("records absolute paths (a relative dir); resume finds a recorded file moved into dir", function()
    local c = env:client("sellerpic", { ledger = store.make(dir) })
    local id = assert(c:create(params("sellerpic")))
    local t = assert(c:wait(id, FAST))
    local cwd = fe.sh("pwd")
    local _, depth = cwd:gsub("/[^/]+", "")
    local rel = string.rep("../", depth) .. dir:sub(2)
    local files = assert(c:download(t, { dir = rel }))
    assert.equal(rel, files[1].path:sub(1, #rel))
    local row = c.ledger:get(id).files[files[1].name]
    assert.equal(dir, row.path:sub(1, #dir))
    assert.is_true(row.intact)
    -- moved to another folder (mv keeps size and mtime): found there, not fetched again
    os.execute("mkdir " .. fe.q(dir .. "/moved") .. " && mv " .. fe.q(row.path) .. " " .. fe.q(dir .. "/moved/"))
    assert.is_false(c.ledger:get(id).files[files[1].name].intact)
    assert.equal(1, #c.ledger:tasks { pending = true })
    local mark = env:mark()
    local _, errs, got = assert(c:resume { dir = dir .. "/moved", interval = 0.05 })
    assert.same({}, errs)
    assert.is_true(got[id][1].adopted)
    assert.equal(0, #fe.file_requests(env:log(mark)))
    assert.equal(dir .. "/moved/", c.ledger:get(id).files[files[1].name].path:sub(1, #dir + 7))
    -- a different file under that name is not taken for it
    local path = c.ledger:get(id).files[files[1].name].path
    fe.write(path, "other bytes")
    local _, errs2 = assert(c:resume { dir = dir .. "/moved", interval = 0.05 })
    assert.equal("io", errs2[id].kind)
    assert.matches("exists", errs2[id].message)
  end)

  it("resume and reconcile check their arguments before any request", function()
    local c = env:client("tripo")
    local r, err = c:resume({ dir = dir })
    assert.is_nil(r)
    assert.matches("no ledger", err.message)
    c = env:client("tripo", { ledger = store.make(dir) })
    r, err = c:resume({})
    assert.matches("'dir'", err.message)
    r, err = c:resume({ dir = dir, bogus = 1 })
    assert.matches("unknown option 'bogus'", err.message)
    fe.write(dir .. "/a-file", "x")
    r, err = c:resume({ dir = dir .. "/a-file" })
    assert.equal("io", err.kind)
    r, err = c:resume({ dir = dir, interval = -1 })
    assert.equal("invalid_argument", err.kind)
    -- every option of download reaches download's own check (they were a copied list that
    -- had left out min_speed and min_speed_time)
    for _, k in ipairs { "min_speed", "min_speed_time", "max_bytes" } do
      r, err = c:resume({ dir = dir, [k] = -1 })
      assert.is_nil(r)
      assert.matches("download option '" .. k .. "' must be", err.message)
    end
    r, err = c:resume({ dir = dir, download_timeout = 0 })
    assert.matches("download option 'timeout' must be", err.message)
    r, err = c:reconcile({ window = "x" })
    assert.equal("invalid_argument", err.kind)
    r, err = taskapi.new { provider = "tripo", api_key = "k", ledger = 5 }
    assert.is_nil(r)
    assert.matches("option 'ledger'", err.message)
  end)

  describe("CLI", function()
    local function run(args, envs)
      local out, errf = dir .. "/out.txt", dir .. "/err.txt"
      local p = io.popen((envs or "") .. " TASKAPI_API_KEY=test-key " .. LUA .. " bin/taskapi " .. args .. " >" .. out ..
        " 2>" .. errf .. "; echo $?")
      local code = tonumber(p:read("*a"))
      p:close()
      return code, fe.read(out) or "", fe.read(errf) or ""
    end

    it("tasks [--pending] [--json] and resume --dir, with --ledger or TASKAPI_LEDGER", function()
      local path = store.make(dir)
      local base = " --base-url " .. fe.q(env.base.tripo) .. " --min-interval 0"
      local code, out, err = run("create --type text_to_model --param model_version=v3.1-20260211 --param prompt=x" ..
        " --param fake.run=0.3 --param fake.queue=0 --ledger " .. fe.q(path) .. base)
      assert.equal(0, code, err)
      local id = out:match("%S+")
      code, out = run("tasks --pending --json --ledger " .. fe.q(path))
      assert.equal(0, code)
      local t = cjson.decode(out:match("[^\n]+"))
      assert.equal(id, t.id)
      assert.is_true(t.pending)
      -- the environment names the ledger as well; no key needed to read it
      code, out = run("tasks", "TASKAPI_API_KEY= TASKAPI_LEDGER=" .. fe.q(path))
      assert.equal(0, code)
      assert.matches(id, out, 1, true)
      code, out, err = run("resume --dir " .. fe.q(dir .. "/res") .. " --interval 0.05" .. base,
        "TASKAPI_LEDGER=" .. fe.q(path))
      assert.equal(0, code, err)
      assert.matches("saved " .. dir .. "/res/" .. id, out, 1, true)
      code, out = run("tasks --pending --ledger " .. fe.q(path))
      assert.equal(0, code)
      assert.equal("", out)
      code, out = run("tasks --ledger " .. fe.q(path))
      assert.matches(id .. "  tripo      succeeded  2/2 saved", out, 1, true)
      code, out, err = run("tasks")
      assert.equal(2, code)
      assert.matches("no ledger", err)
      code, out, err = run("resume --dir " .. fe.q(dir) .. base)
      assert.equal(2, code)
      assert.matches("no ledger", err)
    end)
  end)
end)
end
