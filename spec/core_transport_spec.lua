-- taskapi.core transport: the multi handle and transfers over real HTTP against a private
-- nginx on 127.0.0.1 (blocking request, non-blocking add/perform/poll/completed, keep-alive,
-- methods and bodies, headers, redirects, limits, timeouts and stalls, error mapping,
-- cancel/close/GC).
local core = require "taskapi.core"
local nginx = require "taskapi.fake.process"

local is54 = math.type ~= nil

local LOCATIONS = [[
location = /json {
  content_by_lua_block {
    ngx.header["Content-Type"] = "Application/JSON; charset=utf-8"
    ngx.header["X-Tripo-Trace-ID"] = "trace-123"
    ngx.print('{"id": 1869254713398571010, "progress": 1, "ratio": 0.5, "name": "x"}')
  }
}
location = /conn {
  content_by_lua_block { ngx.print(ngx.var.connection, " ", ngx.var.connection_requests) }
}
location = /echo {
  content_by_lua_block {
    ngx.req.read_body()
    local b = ngx.req.get_body_data() or ""
    ngx.print(ngx.req.get_method(), "\n", #b, "\n", b)
  }
}
location = /headers {
  content_by_lua_block {
    ngx.header["X-Multi"] = "first"
    ngx.print(ngx.var.http_user_agent or "", "\n", ngx.var.http_x_test or "")
  }
}
location = /busy {
  content_by_lua_block {
    ngx.status = 503
    ngx.header["Retry-After"] = "7"
    ngx.print("busy")
  }
}
location = /html502 {
  content_by_lua_block {
    ngx.status = 502
    ngx.header["Content-Type"] = "text/html"
    ngx.print("<html>bad gateway</html>")
  }
}
location = /sleep {
  content_by_lua_block {
    ngx.sleep(tonumber(ngx.var.arg_s) or 1)
    ngx.print("slept ", ngx.var.arg_id or "")
  }
}
location = /stall {
  content_by_lua_block {
    ngx.header["Content-Length"] = 1000
    ngx.print("x")
    ngx.flush(true)
    ngx.sleep(5)
    ngx.print(string.rep("y", 999))
  }
}
location = /big {
  content_by_lua_block { ngx.print(string.rep("x", 100000)) }
}
location = /redirect { return 302 /json; }
location = /loop { return 302 /loop; }
location = /to-ftp {
  content_by_lua_block { ngx.redirect("ftp://127.0.0.1/file", 302) }
}
]]

local srv

local function url(p) return srv.url .. p end

describe("core.multi", function()
  setup(function()
    srv = assert(nginx.start { locations = LOCATIONS, ttl = 300 })
  end)
  teardown(function()
    if srv then srv.stop() end
  end)

  it("exposes the version and libcurl's version", function()
    assert.are.equal("0.1.0", core.version)
    assert.truthy(core.curl_version:find("libcurl/", 1, true))
  end)

  it("performs a blocking GET with headers, content type, trace id and JSON", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/json"), json = true, trace_header = "X-Tripo-Trace-ID" })
    assert.are.equal(200, res.status)
    assert.are.equal("application/json", res.content_type)
    assert.are.equal("trace-123", res.trace_id)
    assert.are.equal("trace-123", res.headers["x-tripo-trace-id"])
    -- the trace header is the request's to name: the C module knows no provider's
    local plain = assert(m:request { url = url("/json"), json = true, response_headers = false })
    assert.is_nil(plain.trace_id)
    local named = assert(m:request { url = url("/json"), json = true, response_headers = false,
      trace_header = "x-tripo-trace-id" })
    assert.are.equal("trace-123", named.trace_id)
    for _, bad in ipairs { "", "has space", "a:b", 42, string.rep("x", 65) } do
      local r, err = m:request { url = url("/json"), trace_header = bad }
      assert.is_nil(r)
      assert.are.equal("invalid_argument", err.kind)
      assert.truthy(err.message:find("req.trace_header", 1, true), err.message)
    end
    assert.are.equal("1869254713398571010", res.json.id)
    assert.are.equal("1", string.format("%s", res.json.progress))
    if is54 then assert.are.equal("integer", math.type(res.json.progress)) end
    assert.are.equal(0.5, res.json.ratio)
    assert.is_nil(res.json_error)
    assert.are.equal(url("/json"), res.effective_url)
    assert.are.equal(0, res.redirects)
    assert.is_number(res.time)
    assert.are.equal(0, m:count())
    m:close()
  end)

  it("keeps the raw body without json", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/json") })
    assert.truthy(res.body:find('"progress": 1', 1, true))
    assert.is_nil(res.json)
    m:close()
  end)

  it("reuses one connection for 20 sequential requests (keep-alive)", function()
    local m = core.multi()
    local conns, n = {}, 0
    for i = 1, 20 do
      local res = assert(m:request { url = url("/conn") })
      local c, r = res.body:match("^(%d+) (%d+)$")
      if not conns[c] then conns[c] = true; n = n + 1 end
      assert.are.equal(tostring(i), r)
    end
    assert.are.equal(1, n)
    m:close()
  end)

  it("sends POST, PUT, DELETE bodies and HEAD", function()
    local m = core.multi()
    local body = "a=1\0b" .. string.rep("z", 70000)
    local res = assert(m:request { url = url("/echo"), method = "POST", body = body,
                                   headers = { "Content-Type: application/octet-stream" } })
    local method, len, got = res.body:match("^(%u+)\n(%d+)\n(.*)$")
    assert.are.equal("POST", method)
    assert.are.equal(#body, tonumber(len))
    assert.are.equal(body, got)
    res = assert(m:request { url = url("/echo"), method = "PUT", body = '{"x":1}' })
    assert.are.equal("PUT\n7\n{\"x\":1}", res.body)
    res = assert(m:request { url = url("/echo"), method = "DELETE" })
    assert.are.equal("DELETE\n0\n", res.body)
    res = assert(m:request { url = url("/echo"), method = "POST" })
    assert.are.equal("POST\n0\n", res.body)
    res = assert(m:request { url = url("/echo"), method = "HEAD" })
    assert.are.equal(200, res.status)
    assert.are.equal("", res.body)
    m:close()
  end)

  it("sends the default User-Agent and custom headers; lower-cases response headers", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/headers"), headers = { "X-Test: hello" } })
    local ua, x = res.body:match("^(.-)\n(.*)$")
    assert.truthy(ua:match("^taskapi/0%.1%.0 %(%+libcurl/%d+%.%d+"), ua)
    assert.are.equal("hello", x)
    assert.are.equal("first", res.headers["x-multi"])
    assert.is_nil(res.headers["X-Multi"])
    res = assert(m:request { url = url("/headers"), user_agent = "mine/1" })
    assert.truthy(res.body:find("^mine/1\n"))
    m:close()
  end)

  it("returns 5xx as a res with status, Retry-After parsed", function()
    local m = core.multi()
    local res, err = m:request { url = url("/busy"), json = true }
    assert.is_nil(err)
    assert.are.equal(503, res.status)
    assert.are.equal(7, res.retry_after)
    assert.are.equal("busy", res.body)
    assert.is_string(res.json_error)
    res = assert(m:request { url = url("/html502"), json = true })
    assert.are.equal(502, res.status)
    assert.are.equal("text/html", res.content_type)
    assert.are.equal("<html>bad gateway</html>", res.body)
    assert.is_string(res.json_error)
    assert.is_nil(res.json)
    m:close()
  end)

  it("follows redirects, limits them, and refuses non-http targets", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/redirect") })
    assert.are.equal(200, res.status)
    assert.are.equal(1, res.redirects)
    assert.are.equal(url("/json"), res.effective_url)
    local r2, err = m:request { url = url("/loop"), max_redirects = 3 }
    assert.is_nil(r2)
    assert.are.equal("transport", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("redirect", 1, true))
    r2, err = m:request { url = url("/to-ftp") }
    assert.is_nil(r2)
    assert.are.equal("transport", err.kind)
    assert.is_false(err.retryable)
    assert.is_number(err.curl_code)
    m:close()
  end)

  it("refuses a body over max_body with bad_response", function()
    local m = core.multi()
    local res, err = m:request { url = url("/big"), max_body = 1000 }
    assert.is_nil(res)
    assert.are.equal("bad_response", err.kind)
    assert.are.equal("response body larger than 1000 bytes", err.message)
    res = assert(m:request { url = url("/big"), max_body = 100000 })
    assert.are.equal(100000, #res.body)
    m:close()
  end)

  it("maps a refused connection to a retryable transport error without query or headers", function()
    local m = core.multi()
    local res, err = m:request { url = "http://127.0.0.1:1/x?api_key=SECRET1",
                                 headers = { "Authorization: Bearer SECRET2" } }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_true(err.retryable)
    assert.are.equal(7, err.curl_code)
    assert.truthy(err.message:find("127.0.0.1:1", 1, true))
    assert.is_nil(err.message:find("SECRET", 1, true))
    assert.is_nil(err.message:find("api_key", 1, true))
    m:close()
  end)

  it("maps a TLS handshake failure to a non-retryable transport error", function()
    local m = core.multi()
    local res, err = m:request { url = srv.url:gsub("^http:", "https:") .. "/json" }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("TLS", 1, true))
    m:close()
  end)

  it("times out with kind timeout, retryable", function()
    local m = core.multi()
    local t0 = os.time()
    local res, err = m:request { url = url("/sleep?s=3"), timeout = 0.5 }
    assert.is_nil(res)
    assert.are.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    assert.are.equal("timed out after 0.5 s (127.0.0.1:" .. srv.port .. ")", err.message)
    assert.is_true(os.time() - t0 <= 2)
    m:close()
  end)

  it("tells a stall from a timeout", function()
    local m = core.multi()
    local res, err = m:request { url = url("/stall"), low_speed_time = 1, low_speed_limit = 100, timeout = 10 }
    assert.is_nil(res)
    assert.are.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    assert.truthy(err.message:find("^stalled: less than 100 bytes/s for 1 s"), err.message)
    m:close()
  end)

  it("rejects bad requests with invalid_argument", function()
    local m = core.multi()
    local bad = {
      {},
      { url = 42 },
      { url = "ftp://127.0.0.1/x" },
      { url = url("/json"), method = "BREW" },
      { url = url("/json"), headers = { "X-A: 1\r\nX-Injected: 2" } },
      { url = url("/json"), headers = { 42 } },
      { url = url("/json"), timeout = "soon" },
      { url = url("/json"), body = "x" },
    }
    for i, req in ipairs(bad) do
      local t, err = m:add(req)
      assert.is_nil(t, i)
      assert.are.equal("invalid_argument", err.kind, i)
    end
    -- a numeric field of the wrong type or range is named
    for _, k in ipairs { "timeout", "connect_timeout", "low_speed_time", "max_body" } do
      local t, err = m:add { url = url("/json"), [k] = k == "max_body" and -1 or "soon" }
      assert.is_nil(t, k)
      assert.are.equal("req." .. k .. " must be a number from 0 to 1e12", err.message)
    end
    local t, err = m:add("nope")
    assert.is_nil(t)
    assert.are.equal("invalid_argument", err.kind)
    assert.are.equal(0, m:count())
    m:close()
  end)

  it("runs several transfers concurrently with add/perform/poll/completed", function()
    local m = core.multi()
    local ts = {}
    for i = 1, 5 do
      ts[i] = assert(m:add { url = url("/sleep?s=0.4&id=" .. i) })
    end
    assert.are.equal(5, m:count())
    local r, e = ts[1]:result()
    assert.is_nil(r)
    assert.are.equal("not finished", e.message)
    local got, n = {}, 0
    local deadline = os.time() + 10
    while n < 5 and os.time() < deadline do
      m:perform()
      for _, t in ipairs(m:completed()) do
        local res = assert(t:result())
        got[res.body] = true
        n = n + 1
        local done, total = t:progress()
        assert.are.equal(#res.body, done)
        assert.is_number(total)
        t:close()
      end
      m:poll(0.1)
    end
    assert.are.equal(5, n)
    for i = 1, 5 do assert.is_true(got["slept " .. i]) end
    assert.are.equal(0, m:count())
    assert.are.same({}, m:completed())
    m:close()
  end)

  it("with 64 transfers in flight, poll wakes on each answer and never spins", function()
    -- answers spread over ~1.3 s; poll is given 5 s each time: it must return when a watched
    -- socket is ready (not at the timeout) and must not return at once while nothing is
    -- (a stale timer or a socket watched for the wrong event would spin)
    local m = core.multi()
    for i = 1, 64 do assert(m:add { url = url("/sleep?s=" .. (0.3 + i * 0.015) .. "&id=" .. i) }) end
    local got, n, loops = {}, 0, 0
    local t0 = core.now()
    while n < 64 and core.now() - t0 < 20 do
      loops = loops + 1
      m:perform()
      for _, t in ipairs(m:completed()) do
        local res = assert(t:result())
        got[res.body] = true
        n = n + 1
        t:close()
      end
      if n < 64 then m:poll(5) end
    end
    local elapsed = core.now() - t0
    assert.are.equal(64, n)
    for i = 1, 64 do assert.is_true(got["slept " .. i], "answer " .. i) end
    assert.is_true(elapsed < 4, "took " .. elapsed .. " s: poll slept past ready sockets")
    -- each loop is a wake-up: one per answer or per few answers, plus connecting and sending
    assert.is_true(loops <= 64 * 4, loops .. " wake-ups for 64 answers")
    assert.is_true(loops >= 3, "only " .. loops .. " wake-ups")
    assert.are.equal(0, m:count())
    m:close()
  end)

  it("resolves a host name (libcurl's resolver reports through the same sockets and timer)", function()
    -- only where localhost is 127.0.0.1 and nothing else: no other address is ever a target
    local p = io.popen("getent ahosts localhost 2>/dev/null")
    local out = p:read("*a")
    p:close()
    local only_v4 = out:find("127.0.0.1", 1, true) and not out:gsub("127%.0%.0%.1", ""):find("[%x:]+:[%x:]*")
      and not out:gsub("127%.0%.0%.1", ""):find("%d+%.%d+%.%d+%.%d+")
    if not only_v4 then
      pending("localhost does not resolve to 127.0.0.1 alone here")
      return
    end
    local byname = srv.url:gsub("127%.0%.0%.1", "localhost")
    local m = core.multi()
    local res = assert(m:request { url = byname .. "/json", json = true })
    assert.are.equal("1869254713398571010", res.json.id)
    local n = 0
    for i = 1, 8 do assert(m:add { url = byname .. "/sleep?s=0.1&id=" .. i }) end
    local t0 = core.now()
    while n < 8 and core.now() - t0 < 10 do
      m:perform()
      for _, t in ipairs(m:completed()) do
        assert.are.equal(200, assert(t:result()).status)
        n = n + 1
        t:close()
      end
      if n < 8 then m:poll(1) end
    end
    assert.are.equal(8, n)
    m:close()
  end)

  it("m:request does not steal other transfers' completions", function()
    local m = core.multi()
    local fast = assert(m:add { url = url("/json") })
    local res = assert(m:request { url = url("/sleep?s=0.3&id=slow") })
    assert.are.equal("slept slow", res.body)
    local done = m:completed()
    assert.are.equal(1, #done)
    assert.are.equal(fast, done[1])
    assert.are.equal(200, assert(fast:result()).status)
    assert.are.equal(200, assert(fast:result()).status) -- cached, same answer
    fast:close()
    m:close()
  end)

  it("cancels a running transfer", function()
    local m = core.multi()
    local t = assert(m:add { url = url("/sleep?s=3") })
    m:perform()
    assert.is_true(t:cancel())
    assert.is_false(t:cancel())
    assert.are.equal(0, m:count())
    local res, err = t:result()
    assert.is_nil(res)
    assert.are.equal("cancelled", err.kind)
    m:perform()
    assert.are.same({}, m:completed())
    t:close()
    t:close()
    m:close()
  end)

  it("closes with transfers running; close is idempotent", function()
    local m = core.multi()
    local t1 = assert(m:add { url = url("/sleep?s=3") })
    local t2 = assert(m:add { url = url("/sleep?s=3") }) -- luacheck: ignore 231 (dropped below for the collector)
    m:perform()
    m:close()
    m:close()
    assert.are.equal(0, m:count())
    local _, err = t1:result()
    assert.are.equal("cancelled", err.kind)
    t1:close()
    t2 = nil
    collectgarbage()
    local t3, err3 = m:add { url = url("/json") }
    assert.is_nil(t3)
    assert.are.equal("invalid_argument", err3.kind)
  end)

  it("survives garbage collection of an unclosed multi with running transfers", function()
    do
      local m = core.multi()
      for i = 1, 3 do assert(m:add { url = url("/sleep?s=2&id=" .. i) }) end
      m:perform()
      local m2 = core.multi { max_host_connections = 2, max_connects = 4 }
      assert(m2:add { url = url("/sleep?s=2") })
      m2:perform()
    end
    collectgarbage()
    collectgarbage()
    local m = core.multi()
    assert.are.equal(200, assert(m:request { url = url("/json") }).status)
    m = nil
    collectgarbage()
    collectgarbage()
  end)

  it("keeps a finished transfer usable after its multi is collected", function()
    local t
    do
      local m = core.multi()
      t = assert(m:add { url = url("/json") })
      while m:perform() > 0 do m:poll(0.1) end
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(200, assert(t:result()).status)
    t:close()
  end)

  if is54 then
    it("supports to-be-closed variables", function()
      local f = assert(load([[
        local core, u = ...
        local t0
        do
          local m <close> = core.multi()
          local t <close> = assert(m:add { url = u })
          t0 = t
          m:perform()
        end
        return t0
      ]]))
      local t = f(core, url("/sleep?s=2"))
      local _, err = t:result()
      assert.are.equal("invalid_argument", err.kind)
      assert.are.equal("transfer closed", err.message)
    end)
  end
end)
