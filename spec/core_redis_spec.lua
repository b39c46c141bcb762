-- taskapi.core's Redis binding (src/redis.c, Debian's libhiredis) against a real redis-server
-- on 127.0.0.1 (spec/support/redis.lua): replies of every type, binary-safe arguments and
-- values, big arrays, error replies (call, pipeline, inside arrays), closed and broken
-- connections, connection refused, a server that stops answering mid-call (timeout), and
-- argument errors before anything is sent. Run under valgrind by spec/memcheck.sh and under
-- ASan/UBSan by spec/asan.sh.
local core = require "taskapi.core"
local rs = require "support.redis"

local NULL = core.redis_null

describe("taskapi.core redis", function()
  local srv, c
  setup(function() srv = assert(rs.start { ttl = 300 }) end)
  teardown(function() if srv then srv.stop() end end)
  before_each(function()
    c = assert(core.redis_connect("127.0.0.1", srv.port, 5))
    assert.equal("OK", c:call("FLUSHALL"))
  end)
  after_each(function() if c then c:close() end end)

  it("gives integers, status and bulk strings, nil and arrays (nested) as Lua values", function()
    assert.equal("PONG", c:call("PING"))
    assert.equal("OK", c:call("SET", "k", "v"))
    assert.equal("v", c:call("GET", "k"))
    assert.equal("", (c:call("SET", "e", "") and c:call("GET", "e")))
    assert.equal(1, c:call("INCR", "n"))
    assert.equal(-41, c:call("DECRBY", "n", 42))
    assert.equal(9007199254740991, c:call("INCRBY", "big", 9007199254740991))
    if math.type then assert.equal("integer", math.type(c:call("INCR", "n"))) end
    -- nil: one sentinel, the same every time, not Lua nil
    local missing = c:call("GET", "nope")
    assert.equal(NULL, missing)
    assert.is_true(rawequal(missing, c:call("HGET", "nohash", "f")))
    assert.equal("userdata", type(NULL))
    assert.same({}, c:call("LRANGE", "nolist", 0, -1))
    assert.equal(3, c:call("RPUSH", "l", "a", "b", "c"))
    assert.same({ "a", "b", "c" }, c:call("LRANGE", "l", 0, -1))
    local m = c:call("MGET", "k", "nope", "e")
    assert.equal(3, #m)
    assert.equal("v", m[1])
    assert.equal(NULL, m[2])
    assert.equal("", m[3])
    local nested = c:call("EVAL", "return {1, 'two', {3, {'four', {}}}, false}", 0)
    assert.equal(1, nested[1])
    assert.equal("two", nested[2])
    assert.equal(3, nested[3][1])
    assert.equal("four", nested[3][2][1])
    assert.same({}, nested[3][2][2])
    assert.equal(NULL, nested[4]) -- Lua false in a script is the nil reply
  end)

  it("sends and returns any bytes (NUL, CR LF, every byte value), and megabytes", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local bytes = table.concat(all)
    local key = "k\0\r\n" .. bytes
    assert.equal("OK", c:call("SET", key, bytes .. "\r\n*3\r\n"))
    assert.equal(bytes .. "\r\n*3\r\n", c:call("GET", key))
    local big = string.rep("0123456789abcdef", 131072) -- 2 MiB
    assert.equal("OK", c:call("SET", "big", big))
    local back = c:call("GET", "big")
    assert.equal(#big, #back)
    assert.is_true(back == big)
  end)

  it("writes numbers as Redis reads them: integers exact, others with 17 digits", function()
    assert.equal("OK", c:call("SET", "a", 2 ^ 53))
    assert.equal("9007199254740992", c:call("GET", "a"))
    assert.equal("OK", c:call("SET", "b", 1.5))
    assert.equal("1.5", c:call("GET", "b"))
    assert.equal("OK", c:call("SET", "c", 0.1))
    assert.equal(0.1, tonumber(c:call("GET", "c")))
    assert.equal("OK", c:call("SET", "d", -3))
    assert.equal(-2, c:call("INCR", "d"))
  end)

  it("reads and writes big arrays (100,000 elements)", function()
    local args = { "RPUSH", "big" }
    for i = 1, 5000 do args[#args + 1] = "v" .. i end -- (LuaJIT unpacks at most about 8,000)
    local unpack = table.unpack or unpack
    for _ = 1, 20 do assert.is_number(c:call(unpack(args))) end
    local all = c:call("LRANGE", "big", 0, -1)
    assert.equal(100000, #all)
    assert.equal("v1", all[1])
    assert.equal("v5000", all[100000])
    local cmds = {}
    for i = 1, 5000 do cmds[i] = { "INCR", "counter" } end
    local replies = assert(c:pipeline(cmds))
    assert.equal(5000, #replies)
    assert.equal(1, replies[1])
    assert.equal(5000, replies[5000])
  end)

  it("turns an error reply into nil, err (kind server, Redis's code); the connection stays usable", function()
    local v, err = c:call("NOSUCHCOMMAND", "x")
    assert.is_nil(v)
    assert.equal("server", err.kind)
    assert.equal("ERR", err.code)
    assert.matches("^redis: ERR unknown command", err.message)
    assert.is_false(err.retryable)
    c:call("SET", "s", "x")
    v, err = c:call("LPUSH", "s", "y")
    assert.is_nil(v)
    assert.equal("WRONGTYPE", err.code)
    assert.equal("PONG", c:call("PING"))
    assert.is_nil(c:broken())
    -- inside an array (a script's answer, EXEC's): the err table sits in its slot
    local a = c:call("EVAL", "return {1, redis.error_reply('MINE went wrong'), 3}", 0)
    assert.equal(1, a[1])
    assert.equal("server", a[2].kind)
    assert.equal("MINE", a[2].code)
    assert.equal("redis: MINE went wrong", a[2].message)
    assert.equal(3, a[3])
    assert.equal("OK", c:call("MULTI"))
    assert.equal("QUEUED", c:call("SET", "s2", "1"))
    assert.equal("QUEUED", c:call("LPUSH", "s2", "x"))
    local ex = c:call("EXEC")
    assert.equal("OK", ex[1])
    assert.equal("WRONGTYPE", ex[2].code)
  end)

  it("pipeline: replies in order, an error reply in its slot; checks every command before sending", function()
    local r = assert(c:pipeline({ { "SET", "p", "1" }, { "INCR", "p" }, { "HGET", "p", "f" }, { "GET", "p" }, { "GET", "none" } }))
    assert.equal(5, #r)
    assert.equal("OK", r[1])
    assert.equal(2, r[2])
    assert.equal("WRONGTYPE", r[3].code)
    assert.equal("2", r[4])
    assert.equal(NULL, r[5])
    assert.same({}, c:pipeline({}))
    for _, bad in ipairs({
      { { { "INCR", "p" }, "GET p" }, "command 2 is a string" },
      { { { "INCR", "p" }, {} }, "command 2 is empty" },
      { { { "INCR", "p" }, { "SET", "p", true } }, "command 2, argument 3 is a boolean" },
    }) do
      local v, err = c:pipeline(bad[1])
      assert.is_nil(v)
      assert.equal("invalid_argument", err.kind)
      assert.matches(bad[2], err.message, 1, true)
    end
    assert.equal("2", c:call("GET", "p")) -- nothing of the refused pipelines was sent
    assert.has_error(function() c:pipeline("GET p") end)
  end)

  it("refuses bad arguments with a clear error, before any request", function()
    local v, err = c:call()
    assert.is_nil(v)
    assert.equal("invalid_argument", err.kind)
    assert.matches("no command", err.message)
    v, err = c:call("SET", "k", {})
    assert.matches("argument 3 is a table", err.message)
    v, err = c:call("SET", "k", nil)
    assert.matches("argument 3 is a nil", err.message)
    assert.equal("PONG", c:call("PING"))
    for _, args in ipairs({
      { "", 6379 }, { "127.0.0.1", 0 }, { "127.0.0.1", 65536 }, { "127.0.0.1", 1.5 }, { "127.0.0.1", 6379, 0 },
      { "127.0.0.1", 6379, -1 }, { "a\0b", 6379 },
    }) do
      local conn, cerr = core.redis_connect(args[1], args[2], args[3])
      assert.is_nil(conn)
      assert.equal("invalid_argument", cerr.kind)
    end
  end)

  it("close is idempotent (also __gc); a closed connection answers a transport error", function()
    assert.is_true(c:close())
    assert.is_true(c:close())
    assert.matches("closed", tostring(c))
    local v, err = c:call("PING")
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    assert.matches("redis 127.0.0.1:" .. srv.port .. ": the connection is closed", err.message, 1, true)
    v, err = c:pipeline({ { "PING" } })
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    for _ = 1, 50 do assert(core.redis_connect("127.0.0.1", srv.port, 5)) end
    collectgarbage()
    collectgarbage()
    if _VERSION == "Lua 5.4" then -- <close> does not parse on LuaJIT
      local f = assert(load([[
        local core, port = ...
        local conn <close> = assert(core.redis_connect("127.0.0.1", port, 5))
        assert(conn:call("PING") == "PONG")
        return conn
      ]]))
      local closed_conn = f(core, srv.port)
      assert.matches("closed", tostring(closed_conn))
    end
  end)

  it("connection refused: nil, err kind transport naming Redis and host:port", function()
    local other = assert(rs.start { ttl = 60 })
    local port = other.port
    other.stop()
    local conn, err = core.redis_connect("127.0.0.1", port, 2)
    assert.is_nil(conn)
    assert.equal("transport", err.kind)
    assert.is_true(err.retryable)
    assert.equal("redis 127.0.0.1:" .. port .. ": connection refused", err.message)
  end)

  it("a server that stops answering mid-call: a timeout, the connection marked broken", function()
    local conn = assert(core.redis_connect("127.0.0.1", srv.port, 0.5))
    assert.equal("PONG", conn:call("PING"))
    srv.freeze()
    local t0 = core.now()
    local v, err = conn:call("SET", "x", "1")
    local took = core.now() - t0
    srv.thaw()
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    assert.is_true(err.retryable)
    assert.matches("redis 127.0.0.1:" .. srv.port .. ": timed out after 0.5 s", err.message, 1, true)
    assert.is_true(took >= 0.45 and took < 3, "took " .. took)
    -- broken: no more I/O on it, the same error at once
    local e2 = conn:broken()
    assert.equal("transport", e2.kind)
    t0 = core.now()
    v, err = conn:call("PING")
    assert.is_nil(v)
    assert.matches("timed out", err.message)
    assert.is_true(core.now() - t0 < 0.2)
    v, err = conn:pipeline({ { "PING" } })
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    assert.matches("broken", tostring(conn))
    conn:close()
    assert.equal("PONG", c:call("PING")) -- the server itself is fine
  end)

  it("a server killed under an open connection: transport errors, then broken", function()
    local other = assert(rs.start { ttl = 60 })
    local conn = assert(core.redis_connect("127.0.0.1", other.port, 2))
    assert.equal("OK", conn:call("SET", "a", "1"))
    other.kill()
    local v, err = conn:call("GET", "a")
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    assert.matches("^redis 127.0.0.1:" .. other.port .. ": ", err.message)
    local cmds = { { "GET", "a" }, { "GET", "a" } }
    v, err = conn:pipeline(cmds)
    assert.is_nil(v)
    assert.equal("transport", err.kind)
    conn:close()
    other.stop()
  end)
end)
