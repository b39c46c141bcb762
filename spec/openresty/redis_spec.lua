-- OpenResty: taskapi.util.redis inside nginx, on resty.redis cosockets. The same probe of the
-- API (spec/support/redis_probe.lua: replies of every type, error replies, pipeline, eval with
-- its NOSCRIPT reload, the URL's database, a closed object) gives the same table in a content
-- handler as in this process (the C binding). After a Redis restart a worker whose pool holds
-- eight idle cosockets goes on: nginx drops a pooled cosocket its peer closed, so at most one
-- call fails (a transport error naming Redis).
local cjson = require "cjson"
local process = require "taskapi.fake.process"
local fe = require "support.fake_env"
local redis = require "taskapi.util.redis"
local rs = require "support.redis"
local probe = require "support.redis_probe"

describe("taskapi.util.redis inside nginx (resty.redis on cosockets) #openresty", function()
  local app, srv

  setup(function()
    srv = assert(rs.start { ttl = 300 })
    app = assert(process.start {
      workers = 1,
      ttl = 300,
      locations = [[
    location = /probe {
      content_by_lua_block {
        local redis = require "taskapi.util.redis"
        local probe = dofile(ngx.var.arg_root .. "/spec/support/redis_probe.lua")
        ngx.say(require("cjson").encode(probe(redis, ngx.unescape_uri(ngx.var.arg_url))))
      }
    }
    location = /fill {
      content_by_lua_block {
        -- eight light threads at once: eight cosockets, back in the pool afterwards
        local redis = require "taskapi.util.redis"
        local r = assert(redis.connect(ngx.unescape_uri(ngx.var.arg_url)))
        local threads = {}
        for i = 1, 8 do
          threads[i] = ngx.thread.spawn(function()
            return r:eval("redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])", { "fill" }, {})
          end)
        end
        for i = 1, 8 do assert(select(2, ngx.thread.wait(threads[i]))) end
        ngx.say("filled")
      }
    }
    location = /incr {
      content_by_lua_block {
        local redis = require "taskapi.util.redis"
        local r = assert(redis.connect { host = "127.0.0.1", port = tonumber(ngx.var.arg_port), db = 1 })
        local v, err = r:call("INCR", "n")
        if v then ngx.say("ok ", v) else ngx.say("err ", err.kind, " ", err.message) end
      }
    }
]],
    })
  end)

  teardown(function()
    if app then app.stop() end
    if srv then srv.stop() end
  end)

  local function get(path)
    return fe.sh("curl -s -m 30 " .. fe.q(app.url .. path))
  end

  it("gives the C binding's replies and error shapes", function()
    local url = "redis://127.0.0.1:" .. srv.port .. "/3?prefix=probe"
    local here = probe(redis, url)
    local there = cjson.decode(get("/probe?root=" .. app.root .. "&url=" .. fe.escape(url)))
    assert.same(cjson.decode(cjson.encode(here)), there)
    -- and the probe saw what it should
    assert.equal("a\0b\r\n", there.get)
    assert.equal("<null>", there.missing)
    assert.equal("9007199254740992", there.num[2])
    assert.equal("WRONGTYPE", there.wrongtype[2].code)
    assert.equal("server", there.nested[4].kind)
    assert.equal("invalid_argument", there.bad_pipeline[2].kind)
    assert.same({ "k2", "7" }, there.eval_again[1])
    assert.equal("3", there.db)
    assert.matches("the connection is closed", there.closed[2].message)
    assert.equal("", (app.log():match("%[error%][^\n]*") or ""))
  end)

  it("after a Redis restart a worker with eight pooled cosockets fails at most one call", function()
    local url = "redis://127.0.0.1:" .. srv.port .. "/1"
    assert.equal("filled", get("/fill?url=" .. fe.escape(url)))
    assert.matches("^ok %d+", get("/incr?port=" .. srv.port))
    srv.restart()
    local answers = {}
    for i = 1, 6 do answers[i] = get("/incr?port=" .. srv.port) end
    local failed = 0
    for _, a in ipairs(answers) do
      if a:find("^err ") then
        failed = failed + 1
        assert.matches("^err transport redis 127%.0%.0%.1:" .. srv.port .. ": ", a)
      else
        assert.matches("^ok %d+", a)
      end
    end
    assert.is_true(failed <= 1, table.concat(answers, " | "))
    assert.matches("^ok %d+", answers[6])
  end)
end)
