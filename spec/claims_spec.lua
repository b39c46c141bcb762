-- taskapi.ops.claims against a private redis-server (spec/support/redis.lua): claims take due
-- members only, with a lease and a token; a release puts a member back no sooner than the
-- minimum interval; a lease that ends makes the member claimable again; a lost lease cannot be
-- released, finished or renewed; a finished poll moves to the download queue; the sweep's
-- enqueue leaves queued, leased and finished members alone; a Redis that is not there is a
-- transport error naming it.
local rs = require "support.redis"
local claims = require "taskapi.ops.claims"
local redis = require "taskapi.util.redis"
local core = require "taskapi.core"

describe("the fleet's queues (taskapi.ops.claims)", function()
  local srv, conn

  setup(function()
    srv = assert(rs.start { ttl = 120 })
    conn = assert(redis.connect(srv.url("claims")))
  end)
  teardown(function()
    if conn then conn:close() end
    if srv then srv.stop() end
  end)

  local n = 0
  local function queues()
    n = n + 1
    local C = claims.new(conn, "claims" .. n, "tripo")
    C.worker = "spec"
    return C
  end

  it("claims due members once, up to n, with a token", function()
    local C = queues()
    assert.equal(3, C:enqueue({ "a", "b", "c" }, {}, 0))
    local ids, token, nxt = C:claim("poll", 2, 5)
    assert.same({ "a", "b" }, (function() table.sort(ids) return ids end)())
    assert.is_string(token)
    assert.is_true(nxt ~= nil)
    local more = C:claim("poll", 10, 5)
    assert.same({ "c" }, more)
    local none, _, left = C:claim("poll", 10, 5)
    assert.same({}, none)
    assert.is_true(left > 4 and left <= 5) -- the first lease's end
    assert.same({ poll = 0, poll_leased = 3, download = 0, download_leased = 0 }, C:sizes())
  end)

  it("puts a released member back no sooner than the minimum interval", function()
    local C = queues()
    C:enqueue({ "a" }, {}, 0)
    local ids, token = C:claim("poll", 1, 5)
    assert.same({ "a" }, ids)
    assert.is_true(C:release("poll", "a", token, 0.01, 0.3))
    assert.same({}, (C:claim("poll", 1, 5)))
    core.sleep(0.35)
    assert.same({ "a" }, (C:claim("poll", 1, 5)))
  end)

  it("makes a member claimable again when its lease ends; the old token then holds nothing", function()
    local C = queues()
    C:enqueue({ "a" }, {}, 0)
    local _, old = C:claim("poll", 1, 0.2)
    assert.same({}, (C:claim("poll", 1, 0.2)))
    core.sleep(0.25)
    local ids, new = C:claim("poll", 1, 5)
    assert.same({ "a" }, ids)
    assert.is_false(C:release("poll", "a", old, 0, 0))
    assert.is_false(C:renew("poll", "a", old, 5))
    assert.is_false(C:finish("poll", "a", old, "done"))
    assert.is_true(C:renew("poll", "a", new, 5))
    assert.is_true(C:finish("poll", "a", new, "download"))
    -- finished polling: in the download queue, and a sweep does not queue its poll again
    assert.equal(0, C:enqueue({ "a" }, { "a" }, 0))
    local d, dt = C:claim("download", 1, 5)
    assert.same({ "a" }, d)
    assert.equal(0, C:enqueue({}, { "a" }, 0)) -- leased: left alone
    assert.is_true(C:finish("download", "a", dt))
    assert.same({ poll = 0, poll_leased = 0, download = 0, download_leased = 0 }, C:sizes())
  end)

  it("queues a swept poll no sooner than the minimum interval after the task's last poll", function()
    local C = queues()
    C:enqueue({ "a" }, {}, 0)
    local _, token = C:claim("poll", 1, 5)
    assert.is_true(C:release("poll", "a", token, 0, 0))
    -- the queue's entry lost (a write Redis did not keep): the sweep finds the task again
    conn:call("DEL", C.f .. ":poll")
    assert.equal(1, C:enqueue({ "a" }, {}, 0.3))
    assert.same({}, (C:claim("poll", 1, 5)))
    core.sleep(0.35)
    assert.same({ "a" }, (C:claim("poll", 1, 5)))
  end)

  it("lets one holder at a time have the sweep's lock", function()
    local C = queues()
    assert.is_true(C:lock("sweep", 0.2, "me"))
    assert.is_false(C:lock("sweep", 0.2, "other"))
    assert.is_true(C:lock("sweep", 0.2, "me"))
    core.sleep(0.25)
    assert.is_true(C:lock("sweep", 0.2, "other"))
  end)

  it("says which Redis is not there", function()
    local c2 = assert(redis.connect(srv.url("claims")))
    local C = claims.new(c2, "down", "tripo")
    srv.halt()
    local ids, err = C:claim("poll", 1, 5)
    srv.restart()
    assert.is_nil(ids)
    assert.equal("transport", err.kind)
    assert.matches("^fleet: claim: redis 127%.0%.0%.1:" .. srv.port, err.message)
    assert.same({}, (C:claim("poll", 1, 5))) -- the next call reconnects
    c2:close()
  end)
end)
