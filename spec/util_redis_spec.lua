-- taskapi.util.redis, the Lua layer's Redis client outside nginx (the C binding): URL
-- parsing and its errors, SELECT of the URL's database, eval by EVALSHA (the script loaded
-- on NOSCRIPT, also after a restart), pipeline, transparent reconnect on the call after a
-- transport error, and the same error shapes as the binding; and spec/support/redis.lua's
-- server stops by itself (its watchdog). Its OpenResty backend (resty.redis) is driven by
-- spec/openresty/redis_spec.lua and spec/openresty/ledger_spec.lua.
local core = require "taskapi.core"
local redis = require "taskapi.util.redis"
local rs = require "support.redis"

describe("taskapi.util.redis", function()
  local srv
  setup(function() srv = assert(rs.start { ttl = 300 }) end)
  teardown(function() if srv then srv.stop() end end)

  it("parses redis://HOST:PORT/DB?prefix=NAME&timeout=S, with defaults", function()
    assert.same({ host = "127.0.0.1", port = 6390, db = 3, prefix = "jobs", timeout = 2.5 },
      redis.parse("redis://127.0.0.1:6390/3?prefix=jobs&timeout=2.5"))
    assert.same({ host = "localhost", port = 6379, db = 0, timeout = 5 }, redis.parse("redis://localhost"))
    assert.same({ host = "::1", port = 7000, db = 0, timeout = 5 }, redis.parse("redis://[::1]:7000/"))
    assert.same({ host = "h", port = 1, db = 2, prefix = "p", timeout = 5 }, redis.parse { host = "h", port = 1, db = 2, prefix = "p" })
    assert.equal(core.redis_null, redis.null)
  end)

  it("refuses a bad URL with an invalid_argument error naming the problem", function()
    for _, case in ipairs({
      { "http://127.0.0.1:6379", "must start with redis://" },
      { "redis://", "names no host" },
      { "redis://:6379/0", "names no host" },
      { "redis://h:port/0", "the port 'port' is not a number" },
      { "redis://h:70000/0", "port must be a whole number from 1 to 65535" },
      { "redis://h:6379/x", "the path '/x' is not a database number" },
      { "redis://h:6379/0/1", "is not a database number" },
      { "redis://h:6379/0?prefix=", "the prefix must be 1 to 200 characters" },
      { "redis://h:6379/0?prefix=a b", "the prefix must be" },
      { "redis://h:6379/0?db=1", "unknown URL parameter 'db'" },
      { "redis://h:6379/0?timeout=soon", "timeout 'soon' is not a number" },
      { "redis://h:6379/0?timeout=0", "timeout must be more than 0" },
      { "redis://:secret@h:6379/0", "a user or password in the URL is not supported" },
      { 42, "expects a redis:// URL or an options table, got number" },
      { { host = "h", bogus = 1 }, "unknown option 'bogus'" },
    }) do
      local r, err = redis.connect(case[1])
      assert.is_nil(r)
      assert.equal("invalid_argument", err.kind, tostring(case[1]))
      assert.matches(case[2], err.message, 1, true)
      assert.is_nil(tostring(err):find("secret", 1, true))
    end
  end)

  it("selects the URL's database", function()
    local a = assert(redis.connect("redis://127.0.0.1:" .. srv.port .. "/0"))
    local b = assert(redis.connect("redis://127.0.0.1:" .. srv.port .. "/5"))
    assert.equal("OK", a:call("SET", "where", "zero"))
    assert.equal("OK", b:call("SET", "where", "five"))
    assert.equal("zero", a:call("GET", "where"))
    assert.equal("five", b:call("GET", "where"))
    assert.equal(5, tonumber(b:call("CLIENT", "INFO"):match(" db=(%d+)")))
    a:close()
    b:close()
  end)

  it("eval: EVALSHA, the script loaded when the server does not know it (NOSCRIPT)", function()
    local r = assert(redis.connect(srv.url()))
    local script = "return {KEYS[1], ARGV[1], ARGV[2]}"
    assert.same({ "k", "a", "2" }, r:eval(script, { "k" }, { "a", 2 }))
    assert.same({ "k2", "b", "3" }, r:eval(script, { "k2" }, { "b", 3 }))
    assert.equal("OK", r:call("SCRIPT", "FLUSH"))
    assert.same({ "k3", "c", "4" }, r:eval(script, { "k3" }, { "c", 4 }))
    local v, err = r:eval("return redis.error_reply('NOPE not today')", {}, {})
    assert.is_nil(v)
    assert.equal("server", err.kind)
    assert.equal("NOPE", err.code)
    v, err = r:eval("this is not lua", {}, {})
    assert.is_nil(v)
    assert.equal("server", err.kind)
    assert.matches("^redis: ERR", err.message)
    local p = assert(r:pipeline({ { "SET", "x", 1 }, { "INCR", "x" }, { "HGET", "x", "f" } }))
    assert.equal("OK", p[1])
    assert.equal(2, p[2])
    assert.equal("WRONGTYPE", p[3].code)
    r:close()
  end)

  it("reconnects on the next call after a transport error (restart, kill); the error names Redis", function()
    local other = assert(rs.start { ttl = 120 })
    local r = assert(redis.connect("redis://127.0.0.1:" .. other.port .. "/2?timeout=2"))
    local script = "return redis.call('INCR', KEYS[1])"
    assert.equal(1, r:eval(script, { "n" }, {}))
    other.restart() -- a clean stop: the AOF keeps n; the script cache is gone
    local v, err = r:call("GET", "n")
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    assert.matches("^redis 127.0.0.1:" .. other.port .. ": ", err.message)
    assert.equal("1", r:call("GET", "n")) -- reconnected, db 2 selected again
    assert.equal(2, r:eval(script, { "n" }, {}))
    other.kill()
    v, err = r:call("GET", "n")
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    v, err = r:call("GET", "n") -- nothing listens: the reconnect is refused
    assert.is_nil(v)
    assert.equal("redis 127.0.0.1:" .. other.port .. ": connection refused", err.message)
    other.restart()
    assert.equal("2", r:call("GET", "n"))
    r:close()
    v, err = r:call("GET", "n")
    assert.is_nil(v)
    assert.matches("closed", err.message)
    other.stop()
  end)

  it("connect answers a transport error when nothing listens", function()
    local other = assert(rs.start { ttl = 60 })
    local url = other.url()
    other.stop()
    local r, err = redis.connect(url)
    assert.is_nil(r)
    assert.equal("transport", err.kind)
    assert.matches("connection refused", err.message)
  end)

  it("spec/support/redis: a server nobody stops is stopped by its watchdog, its folder removed", function()
    local other = assert(rs.start { ttl = 1 })
    local r = assert(redis.connect(other.url()))
    assert.equal("PONG", r:call("PING"))
    local gone = false
    for _ = 1, 100 do -- up to 5 s
      if not io.open("/proc/" .. other.pid .. "/stat") and not io.open(other.dir .. "/redis.conf") then
        gone = true
        break
      end
      os.execute("sleep 0.05")
    end
    assert.is_true(gone)
    local v, err = r:call("PING")
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    r:close()
  end)
end)
