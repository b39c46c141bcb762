-- taskapi.core's plain-HTTP path (src/lean.c) and the requests it leaves to libcurl, observed
-- through m:stats() ({plain, curl, handed, idle}): an API call to http:// with a numeric host
-- runs on our own HTTP/1.1 client; a host name, a download, a proxy in the environment or a
-- per-host connection limit leave it to libcurl; a redirect to a host name is handed over to
-- libcurl and still followed. The wire behaviour itself is pinned by core_http1_spec.
local core = require "taskapi.core"
local nginx = require "taskapi.fake.process"

local LUA = jit and "luajit" or "lua5.4"
local CPATH = "./build/" .. LUA .. "/?.so"

local srv

describe("core.multi plain-HTTP path", function()
  setup(function()
    srv = assert(nginx.start { ttl = 120, locations = [[
location = /json { content_by_lua_block { ngx.header["Content-Type"] = "application/json"; ngx.print('{"id": 1869254713398571010}') } }
location = /conn { content_by_lua_block { ngx.print(ngx.var.connection) } }
location = /to-localhost { content_by_lua_block { ngx.redirect("http://localhost:" .. ngx.var.server_port .. "/json", 302) } }
location = /bigjson {
  content_by_lua_block {
    local t = {}
    for i = 1, 20000 do t[i] = '{"id": ' .. i .. ', "name": "task"}' end
    ngx.print("[", table.concat(t, ","), "]")
  }
}
location = /file { content_by_lua_block { ngx.print(string.rep("f", 1000)) } }
]] })
  end)
  teardown(function() if srv then srv.stop() end end)

  it("runs API calls to a numeric host on it, over one kept connection", function()
    local m = core.multi()
    local first
    for i = 1, 10 do
      local res = assert(m:request { url = srv.url .. "/conn" })
      first = first or res.body
      assert.are.equal(first, res.body, "request " .. i)
    end
    local res = assert(m:request { url = srv.url .. "/json", json = true })
    assert.are.equal("1869254713398571010", (tostring(res.json.id)))
    local st = m:stats()
    assert.are.equal(11, st.plain)
    assert.are.equal(0, st.curl)
    assert.are.equal(1, st.idle)
    m:close()
  end)

  it("leaves a host name, a download and a multi with max_host_connections to libcurl", function()
    local m = core.multi()
    local port = srv.url:match(":(%d+)$")
    assert(m:request { url = "http://localhost:" .. port .. "/json" })
    local dir = os.tmpname()
    os.remove(dir)
    assert(m:request { url = srv.url .. "/file", path = dir })
    local f = assert(io.open(dir, "rb"))
    assert.are.equal(1000, #f:read("a"))
    f:close()
    os.remove(dir)
    local st = m:stats()
    assert.are.equal(0, st.plain)
    assert.are.equal(2, st.curl)
    m:close()
    local m2 = core.multi { max_host_connections = 2 }
    assert(m2:request { url = srv.url .. "/json" })
    assert.are.equal(1, m2:stats().curl)
    m2:close()
  end)

  it("hands a redirect to a host name over to libcurl, which follows it", function()
    local m = core.multi()
    local res = assert(m:request { url = srv.url .. "/to-localhost", json = true })
    assert.are.equal(200, res.status)
    assert.are.equal(1, res.redirects)
    assert.truthy(res.effective_url:find("^http://localhost:%d+/json$"), res.effective_url)
    assert.is_not_nil(res.json)
    local st = m:stats()
    assert.are.equal(1, st.plain)
    assert.are.equal(1, st.handed)
    m:close()
  end)

  it("keeps no answer in a closed transfer: one full collection frees the decoded JSON", function()
    -- a transfer has a finalizer, so an answer it kept would live one more collector cycle
    local m = core.multi()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local res = assert(m:request { url = srv.url .. "/json", json = true })
      weak[1] = res.json
      local t = assert(m:add { url = srv.url .. "/json", json = true })
      while m:perform() > 0 do m:poll(0.1) end
      weak[2] = assert(t:result()).json
      assert.are.equal(weak[2], assert(t:result()).json) -- kept until the close
      t:close()
      local again, err = t:result()
      assert.is_nil(again)
      assert.are.equal("transfer closed", err.message)
    end
    collectgarbage("collect")
    assert.is_nil(weak[1])
    assert.is_nil(weak[2])
    -- weak references are cleared even for what a finalizer resurrects: the heap says more.
    -- 20,000 decoded objects (over 1 MiB of Lua heap) are given back by one full collection.
    collectgarbage("collect")
    local base = collectgarbage("count")
    for _, via_add in ipairs { false, true } do
      do
        local res
        if via_add then
          local t = assert(m:add { url = srv.url .. "/bigjson", json = true })
          while m:perform() > 0 do m:poll(0.1) end
          res = assert(t:result())
          t:close()
        else
          res = assert(m:request { url = srv.url .. "/bigjson", json = true })
        end
        assert.are.equal(20000, #res.json)
        assert.is_true(collectgarbage("count") - base > 1024, "the answer takes over 1 MiB")
      end
      collectgarbage("collect")
      local left = collectgarbage("count") - base
      assert.is_true(left < 256, (via_add and "add" or "request") .. ": " .. left .. " KiB left")
    end
    m:close()
  end)

  it("leaves everything to libcurl when a proxy is set in the environment", function()
    -- a child process with http_proxy pointing at a closed port: libcurl's proxy, refused
    local code = "package.cpath = " .. string.format("%q", CPATH) .. " .. ';' .. package.cpath " ..
      "local core = require 'taskapi.core' local m = core.multi() " ..
      "local res, err = m:request { url = " .. string.format("%q", srv.url .. "/json") .. " } " ..
      "io.write(tostring(res and res.status), ' ', m:stats().curl, ' ', tostring(err and err.kind))"
    local p = assert(io.popen("http_proxy=http://127.0.0.1:1 " .. LUA .. " -e " .. string.format("%q", code) .. " 2>&1"))
    local out = p:read("a")
    p:close()
    assert.are.equal("nil 1 transport", out)
  end)
end)
