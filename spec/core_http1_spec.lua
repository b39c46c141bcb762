-- core.multi's HTTP/1.1 wire behaviour for plain http:// calls, pinned down against crafted,
-- byte-exact answers: framing (Content-Length in pieces, chunked with extensions, trailers
-- and awkward splits, close-delimited bodies, 1xx interim answers, bodiless 204/304/HEAD),
-- connection reuse (keep-alive, fresh_connect, Connection: close, HTTP/1.0, a kept
-- connection the server closes), malformed and oversized answers, cut connections, refused
-- connections, timeouts and stalls, the request bytes sent (request line, Host, User-Agent,
-- custom headers, Content-Length and body), redirects (relative and absolute Location,
-- 302/303/307/308 after POST, Authorization kept to the same origin only, limits), 64
-- transfers in flight, and the result fields read from headers. It is written against the
-- public Lua API only (m:request, m:add/perform/poll/completed, res and err fields): today's
-- libcurl transport is the reference, and any other HTTP/1.1 client in core.multi must pass
-- it unchanged.
--
-- The answers come from spec/support/h1_raw.lua: a scripted server on nginx's raw downstream
-- socket that answers request after request on one connection and numbers them, so the
-- bodies of /conn ("<connection id> <request number on it>") show which connection a request
-- went over. The routes below run inside nginx (init_by_lua_block); `c:send` writes strings
-- and pauses for numbers, a route returning "close" ends the connection (nginx closes it).
local core = require "taskapi.core"
local nginx = require "taskapi.fake.process"
local bytes = require "support.bytes"

local function cwd()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end
local SUPPORT = (function()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then dir = cwd() .. "/" .. dir end
  return dir .. "/support"
end)()

local ROUTES = [==[
local R = package.loaded.h1raw.routes
local OK = "HTTP/1.1 200 OK\r\n"
R["/cl-split"] = function(c)
  c:send(OK .. "Content-Le", 0.03, "ngth: 11\r\n\r\nhel", 0.03, "lo wo", 0.03, "rld")
end
R["/chunked"] = function(c)
  c:send(OK .. "Transfer-Encoding: chunked\r\n\r\n",
    "5;ext=1\r\nhello\r\n", 0.02, "A\r\n0123456789\r\n", "a; name=\"v\"\r\nabcdefghij\r\n", 0.02,
    "1\r\n!\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n")
end
R["/chunked-json"] = function(c)
  c:send(OK .. "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    "7\r\n{\"id\": \r\n", 0.02, "C;x=y\r\n\"abc\", \"n\": \r\n", "2\r\n42\r\n1\r\n}\r\n0\r\n\r\n")
end
R["/chunked-awkward"] = function(c)
  c:send(OK .. "Transfer-Encoding: chu", 0.02, "nked\r\n\r", 0.02, "\n1", 0.02, "0\r", 0.02, "\n0123456", 0.02,
    "789abcdef\r", 0.02, "\n3", 0.02, ";e", 0.02, "xt\r\nxyz", 0.02, "\r\n0\r", 0.02, "\n\r", 0.02, "\n")
end
R["/http10"] = function(c)
  c:send("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ", 0.02, "second ", 0.02, "third")
  return "close"
end
R["/close11"] = function(c)
  c:send(OK .. "Connection: close\r\n\r\nuntil ", 0.02, "the end")
  return "close"
end
-- says it closes (or is HTTP/1.0 without keep-alive) but keeps the connection open
R["/says-close"] = function(c) c:send(OK .. "Connection: close\r\nContent-Length: 2\r\n\r\nok") end
R["/http10-cl"] = function(c) c:send("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok") end
R["/continue"] = function(c)
  c:send("HTTP/1.1 100 Continue\r\n\r\n", 0.02, OK .. "Content-Length: 4\r\n\r\ndone")
end
R["/early"] = function(c)
  c:send("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n", 0.02,
    OK .. "Content-Length: 5\r\nX-Final: yes\r\n\r\nfinal")
end
R["/204"] = function(c) c:send("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n") end
R["/304"] = function(c) c:send("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"e\"\r\n\r\n") end
R["/head"] = function(c, req)
  c:send(OK .. "Content-Length: 5\r\n\r\n" .. (req.method == "HEAD" and "" or "hello"))
end
R["/head-chunked"] = function(c, req)
  c:send(OK .. "Transfer-Encoding: chunked\r\n\r\n" .. (req.method == "HEAD" and "" or "2\r\nhi\r\n0\r\n\r\n"))
end
R["/zero"] = function(c) c:send(OK .. "Content-Length: 0\r\n\r\n") end
R["/ka-close"] = function(c)
  local b = "ok " .. c.id
  c:send(OK .. "Connection: keep-alive\r\nContent-Length: " .. #b .. "\r\n\r\n" .. b)
  return "close"
end
R["/first-only"] = function(c) -- answers the first request of a connection; closes at the second
  if c.n > 1 then return "close" end
  c:reply(200, nil, "ok " .. c.id)
end
R["/not-http"] = function(c) c:send("HELLO\r\n\r\n"); return "close" end
R["/two-cl"] = function(c) c:send(OK .. "Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc"); return "close" end
R["/bad-chunk"] = function(c)
  c:send(OK .. "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"); return "close"
end
local function pad_headers(n)
  local t = {}
  for i = 1, n do t[i] = "X-Pad-" .. i .. ": " .. string.rep("p", 1000) .. "\r\n" end
  return table.concat(t)
end
R["/huge-headers"] = function(c) c:send(OK .. pad_headers(300) .. "Content-Length: 2\r\n\r\nok"); return "close" end
R["/big-headers"] = function(c) c:send(OK .. pad_headers(100) .. "Content-Length: 2\r\n\r\nok") end
R["/big-cl"] = function(c) c:reply(200, nil, string.rep("x", 5000)) end
R["/big-chunked"] = function(c)
  c:send(OK .. "Transfer-Encoding: chunked\r\n\r\n" .. string.rep("3e8\r\n" .. string.rep("x", 1000) .. "\r\n", 5) .. "0\r\n\r\n")
end
R["/cut-cl"] = function(c) c:send(OK .. "Content-Length: 100\r\n\r\n0123456789", 0.02); return "close" end
R["/cut-chunked"] = function(c)
  c:send(OK .. "Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n5\r\nab", 0.02); return "close"
end
R["/nothing"] = function() return "close" end
R["/never"] = function(c) ngx.sleep(2); c:reply(200, nil, "late"); return "close" end
R["/stall"] = function(c) c:send(OK .. "Content-Length: 1000\r\n\r\nx", 2.5, string.rep("y", 999)); return "close" end
R["/redir"] = function(c, req) -- ?code=302&to=<escaped Location>; without to, the echo
  if not req.args.to then return R["/echo"](c, req) end
  c:reply(tonumber(req.args.code) or 302, { "Location: " .. ngx.unescape_uri(req.args.to) }, "")
end
R["/d/redir"] = R["/redir"]
R["/d/echo"] = R["/echo"]
R["/loop"] = function(c) c:reply(302, { "Location: /loop" }, "") end
R["/slow"] = function(c, req) -- even ids with Content-Length, odd ones chunked
  ngx.sleep(math.random() * 0.2)
  local b = "id=" .. req.args.id
  if tonumber(req.args.id) % 2 == 0 then c:reply(200, nil, b)
  else c:send(OK .. "Transfer-Encoding: chunked\r\n\r\n" .. string.format("%x\r\n%s\r\n0\r\n\r\n", #b, b)) end
end
R["/meta"] = function(c)
  c:send(OK .. "Content-Type:  Application/JSON; charset=utf-8\r\nx-trace-id:\tabc-1 \r\nRetry-After:7\r\n" ..
    "Content-Length: 2\r\n\r\n{}")
end
R["/no-reason"] = function(c) c:send("HTTP/1.1 404 \r\nContent-Length: 2\r\n\r\nno") end
R["/te-and-cl"] = function(c) c:send(OK .. "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n") end
-- a second answer nobody asked for right after the body
R["/excess"] = function(c) c:send(OK .. "Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfake!") end
R["/chunk-overflow"] = function(c)
  c:send(OK .. "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"); return "close"
end
R["/cl-abc"] = function(c) c:send(OK .. "Content-Length: abc\r\n\r\nhello"); return "close" end
R["/cl-neg"] = function(c) c:send(OK .. "Content-Length: -5\r\n\r\nhello"); return "close" end
R["/no-colon"] = function(c) c:send(OK .. "Garbage line\r\nContent-Length: 2\r\n\r\nok"); return "close" end
-- 1 MiB of every byte value (spec/support/bytes.lua) in irregular pieces; ?te=chunked for
-- chunks of those sizes, their size lines in upper or lower case hex and split from the data
local SIZES = { 1, 7, 300, 4096, 65536, 2, 100000, 13 }
R["/binary"] = function(c, req)
  local body = package.loaded.h1bytes(1048576)
  local chunked = req.args.te == "chunked"
  c:send(OK .. (chunked and "Transfer-Encoding: chunked\r\n\r\n" or "Content-Length: " .. #body .. "\r\n\r\n"))
  local at, i = 1, 0
  while at <= #body do
    i = i + 1
    local piece = body:sub(at, at + SIZES[(i - 1) % #SIZES + 1] - 1)
    at = at + #piece
    if chunked then
      local size = string.format(i % 2 == 0 and "%X" or "%x", #piece)
      if not c:send(size, "\r\n" .. piece .. "\r\n") then return "close" end
    elseif not c:send(piece) then
      return "close"
    end
    if i % 16 == 0 then ngx.sleep(0.005) end
  end
  if chunked then c:send("0\r\n\r\n") end
end
]==]

local function start()
  return assert(nginx.start {
    ttl = 120,
    http = "init_by_lua_block {\npackage.loaded.h1raw = dofile('" .. SUPPORT .. "/h1_raw.lua')\n" ..
      "package.loaded.h1bytes = dofile('" .. SUPPORT .. "/bytes.lua')\n" .. ROUTES .. "\n}",
    locations = "location / { lua_check_client_abort off; content_by_lua_block { require('h1raw').serve() } }",
  })
end

local srv, srv2

local function url(p) return srv.url .. p end
local function esc(s) return (s:gsub("[^%w]", function(ch) return string.format("%%%02X", ch:byte()) end)) end

-- "<id> <n>" of /conn
local function conn(m, req)
  req = req or {}
  req.url = req.url or url("/conn")
  local res = assert(m:request(req))
  assert.are.equal(200, res.status)
  local id, n = res.body:match("^(%d+) (%d+)$")
  assert.truthy(id, res.body)
  return tonumber(id), tonumber(n)
end

-- The echoed request: its request line, its header lines, and what came after the head.
local function parse_echo(body)
  local head, rest = body:match("^(.-\r\n)\r\n(.*)$")
  assert.truthy(head, body)
  local lines = {}
  for l in head:gmatch("([^\r\n]*)\r\n") do lines[#lines + 1] = l end
  local line = table.remove(lines, 1)
  return line, lines, rest
end

-- the values of header `name` (any case) among lines
local function values(lines, name)
  local out = {}
  for _, l in ipairs(lines) do
    local n, v = l:match("^([^:]+):%s*(.-)%s*$")
    if n and n:lower() == name:lower() then out[#out + 1] = v end
  end
  return out
end

local function server(err) return err.message:find("127.0.0.1:" .. srv.port, 1, true) ~= nil end

describe("core.multi over HTTP/1.1", function()
  setup(function()
    srv = start()
    srv2 = start()
  end)
  teardown(function()
    if srv then srv.stop() end
    if srv2 then srv2.stop() end
  end)

  -- 1
  it("reads a Content-Length body that arrives in several writes", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/cl-split") })
    assert.are.equal(200, res.status)
    assert.are.equal("hello world", res.body)
    assert.are.equal("11", res.headers["content-length"])
    m:close()
  end)

  -- 2
  it("decodes chunked bodies: extensions, upper and lower case hex, trailers; then reuses the connection", function()
    local m = core.multi()
    local id = conn(m)
    local res = assert(m:request { url = url("/chunked") })
    assert.are.equal(200, res.status)
    assert.are.equal("hello0123456789abcdefghij!", res.body)
    -- the trailers were read to the end: the next answer on the connection is intact
    local id2, n = conn(m)
    assert.are.equal(id, id2)
    assert.are.equal(3, n)
    res = assert(m:request { url = url("/chunked-json"), json = true })
    assert.are.same({ id = "abc", n = 42 }, res.json)
    assert.is_nil(res.json_error)
    m:close()
  end)

  -- 3
  it("decodes a chunked body split inside the size line, between CR and LF and inside the data", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/chunked-awkward") })
    assert.are.equal("0123456789abcdefxyz", res.body)
    local _, n = conn(m)
    assert.are.equal(2, n)
    m:close()
  end)

  it("reads 1 MiB of every byte value in irregular pieces, with Content-Length and chunked", function()
    local m = core.multi()
    local want = bytes(1048576)
    for _, q in ipairs { "", "?te=chunked" } do
      local res = assert(m:request { url = url("/binary" .. q) })
      assert.are.equal(#want, #res.body, q)
      assert.is_true(want == res.body, "body differs " .. q)
    end
    local _, n = conn(m)
    assert.are.equal(3, n)
    m:close()
  end)

  -- the request after an answer to `path` ("ok") goes over a new connection
  local function not_reused_after(m, path)
    local id = conn(m)
    assert.are.equal("ok", assert(m:request { url = url(path) }).body)
    local id2, n = conn(m)
    assert.are_not.equal(id, id2, path)
    assert.are.equal(1, n, path)
  end

  it("prefers Transfer-Encoding: chunked to a Content-Length", function()
    local m = core.multi()
    assert.are.equal("hello", assert(m:request { url = url("/te-and-cl") }).body)
    m:close()
  end)

  it("does not take bytes after a body for the next answer", function()
    -- the server sends a second, unasked answer after the body ("fake!"): the connection
    -- cannot be reused for the next request
    local m = core.multi()
    not_reused_after(m, "/excess")
    m:close()
  end)

  -- 4
  it("reads a body delimited by the connection's close (HTTP/1.0, and HTTP/1.1 with Connection: close)", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/http10") })
    assert.are.equal(200, res.status)
    assert.are.equal("first second third", res.body)
    assert.are.equal("text/plain", res.content_type)
    res = assert(m:request { url = url("/close11") })
    assert.are.equal("until the end", res.body)
    m:close()
  end)

  it("does not reuse a connection after Connection: close or an HTTP/1.0 answer without keep-alive", function()
    -- the server keeps both connections open: only the client's reading of the answer
    -- decides
    local m = core.multi()
    not_reused_after(m, "/says-close")
    not_reused_after(m, "/http10-cl")
    m:close()
  end)

  -- 5
  it("skips 1xx interim answers: the final answer's status, headers and body", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/continue") })
    assert.are.equal(200, res.status)
    assert.are.equal("done", res.body)
    res = assert(m:request { url = url("/continue"), method = "POST", body = "x" })
    assert.are.equal(200, res.status)
    assert.are.equal("done", res.body)
    res = assert(m:request { url = url("/early") })
    assert.are.equal(200, res.status)
    assert.are.equal("final", res.body)
    assert.are.equal("yes", res.headers["x-final"])
    assert.is_nil(res.headers["link"]) -- the 103's header is not the answer's
    local _, n = conn(m)
    assert.are.equal(4, n)
    m:close()
  end)

  -- 6
  it("reads no body for 204, 304 and HEAD (even with Content-Length or chunked) and reuses the connection", function()
    local m = core.multi()
    local id = conn(m)
    local n = 1
    local cases = {
      { url = url("/204"), status = 204 },
      { url = url("/304"), status = 304 },
      { url = url("/head"), method = "HEAD", status = 200 },
      { url = url("/head-chunked"), method = "HEAD", status = 200 },
      { url = url("/zero"), status = 200 },
    }
    for _, c in ipairs(cases) do
      local t0 = core.now()
      local res = assert(m:request { url = c.url, method = c.method, timeout = 5 })
      assert.are.equal(c.status, res.status, c.url)
      assert.are.equal("", res.body, c.url)
      assert.is_true(core.now() - t0 < 1, c.url .. " waited for a body")
      local id2, n2 = conn(m)
      n = n + 2
      assert.are.equal(id, id2, c.url)
      assert.are.equal(n, n2, c.url)
    end
    local res = assert(m:request { url = url("/head") })
    assert.are.equal("hello", res.body)
    m:close()
  end)

  -- 7
  it("keeps one connection for 20 sequential requests; fresh_connect opens and drops its own", function()
    local m = core.multi()
    local kept
    for i = 1, 20 do
      local id, n = conn(m)
      kept = kept or id
      assert.are.equal(kept, id)
      assert.are.equal(i, n)
    end
    local fresh = {}
    for _ = 1, 3 do
      local id, n = conn(m, { fresh_connect = true })
      assert.is_nil(fresh[id], "a fresh_connect request reused connection " .. id)
      assert.are_not.equal(kept, id)
      assert.are.equal(1, n)
      fresh[id] = true
    end
    local id, n = conn(m)
    assert.is_nil(fresh[id], "a connection opened for fresh_connect was reused")
    assert.are.equal(kept, id)
    assert.are.equal(21, n)
    m:close()
  end)

  -- 8 (GET only. libcurl re-sends POST, PUT, PATCH and DELETE the same way when a reused
  -- connection closes before any byte of the answer; the spec does not pin that for methods
  -- that are not idempotent: req.fresh_connect is how a caller avoids it.)
  it("retries on a new connection when the server closes a kept-alive one", function()
    local m = core.multi()
    -- the server answers with keep-alive, then closes
    local seen = {}
    for _ = 1, 4 do
      local res = assert(m:request { url = url("/ka-close") })
      assert.are.equal(200, res.status)
      local id = tonumber(res.body:match("^ok (%d+)$"))
      assert.truthy(id, res.body)
      assert.is_nil(seen[id])
      seen[id] = true
    end
    -- the server reads the next request on the kept connection and closes without a byte
    seen = {}
    for _ = 1, 4 do
      local res = assert(m:request { url = url("/first-only") })
      assert.are.equal(200, res.status)
      local id = tonumber(res.body:match("^ok (%d+)$"))
      assert.truthy(id, res.body)
      assert.is_nil(seen[id])
      seen[id] = true
    end
    m:close()
  end)

  -- 9
  it("fails a reply that is not HTTP: transport error naming the server", function()
    local m = core.multi()
    local res, err = m:request { url = url("/not-http") }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_true(server(err), err.message)
    -- a garbled reply is a transient server failure, retryable (as inside OpenResty, where
    -- taskapi.run.cosocket reads it); libcurl called it CURLE_UNSUPPORTED_PROTOCOL, not retryable
    assert.is_true(err.retryable)
    assert.is_true(err.sent)
    assert.are.equal(200, assert(m:request { url = url("/zero") }).status)
    m:close()
  end)

  -- libcurl reported a reply that is not HTTP (HTTP/0.9) as CURLE_UNSUPPORTED_PROTOCOL, which
  -- result.c words "redirect refused"; the plain-HTTP path (src/lean.c) calls it malformed.
  it("does not call a non-HTTP reply a refused redirect", function()
    local m = core.multi()
    local _, err = m:request { url = url("/not-http") }
    assert.is_nil(err.message:find("redirect", 1, true), err.message)
    m:close()
  end)

  it("fails bad framing: chunk size not hex or too large, Content-Length not a number, a header without colon", function()
    -- libcurl: CURLE_RECV_ERROR for the chunk sizes, CURLE_WEIRD_SERVER_REPLY for the others;
    -- both retryable transport errors
    local m = core.multi()
    for _, p in ipairs { "/bad-chunk", "/chunk-overflow", "/cl-abc", "/cl-neg", "/no-colon" } do
      local res, err = m:request { url = url(p) }
      assert.is_nil(res, p)
      assert.are.equal("transport", err.kind, p)
      assert.is_true(server(err), err.message)
      assert.is_true(err.retryable, p)
      assert.is_true(err.sent, p)
      assert.are.equal(200, assert(m:request { url = url("/zero") }).status)
    end
    m:close()
  end)

  it("survives two different Content-Length values", function()
    -- RFC 9112 (6.3) makes this an unrecoverable error, but libcurl 7.88 takes the last value
    -- (body "abc", status 200): the spec does not pin the outcome, only that it is a result
    -- or an error and that the multi goes on working.
    local m = core.multi()
    local res, err = m:request { url = url("/two-cl") }
    if res then
      assert.are.equal(200, res.status)
    else
      assert.is_string(err.kind)
      assert.is_true(server(err) or err.kind == "bad_response", err.message)
    end
    assert.are.equal(200, assert(m:request { url = url("/zero") }).status)
    m:close()
  end)

  it("reads a status line without a reason phrase", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/no-reason") })
    assert.are.equal(404, res.status)
    assert.are.equal("no", res.body)
    m:close()
  end)

  -- 10
  it("refuses response headers over 256 KiB and bodies over max_body with bad_response", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/big-headers") }) -- 100 KiB of headers is fine
    assert.are.equal("ok", res.body)
    assert.are.equal(string.rep("p", 1000), res.headers["x-pad-100"])
    local err
    res, err = m:request { url = url("/huge-headers") }
    assert.is_nil(res)
    assert.are.equal("bad_response", err.kind)
    assert.truthy(err.message:find("^response headers larger than"), err.message)
    for _, p in ipairs { "/big-cl", "/big-chunked" } do
      res, err = m:request { url = url(p), max_body = 4000 }
      assert.is_nil(res, p)
      assert.are.equal("bad_response", err.kind, p)
      assert.are.equal("response body larger than 4000 bytes", err.message, p)
      res = assert(m:request { url = url(p), max_body = 5000 })
      assert.are.equal(string.rep("x", 5000), res.body, p)
    end
    m:close()
  end)

  -- 11
  it("reports a connection cut inside the body as a retryable transport error, sent", function()
    local m = core.multi()
    for _, p in ipairs { "/cut-cl", "/cut-chunked" } do
      local res, err = m:request { url = url(p) }
      assert.is_nil(res, p)
      assert.are.equal("transport", err.kind, p)
      assert.is_true(err.retryable, p)
      assert.is_true(err.sent, p)
      assert.is_true(server(err), err.message)
    end
    m:close()
  end)

  it("reports a fresh connection closed before any byte of the answer as sent", function()
    local m = core.multi()
    for _, req in ipairs { { url = url("/nothing"), fresh_connect = true },
                           { url = url("/nothing"), fresh_connect = true, method = "POST", body = "create" } } do
      local res, err = m:request(req)
      assert.is_nil(res)
      assert.are.equal("transport", err.kind)
      assert.is_true(err.sent) -- the request went out: the server may have acted on it
      assert.is_true(err.retryable)
      assert.is_true(server(err), err.message)
    end
    m:close()
  end)

  -- 12
  it("maps a refused connection to a retryable transport error, not sent", function()
    local gone = start()
    local port = gone.port
    gone.stop()
    local m = core.multi()
    local res, err = m:request { url = "http://127.0.0.1:" .. port .. "/x", method = "POST", body = "b" }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_false(err.sent)
    assert.is_true(err.retryable)
    assert.truthy(err.message:find("127.0.0.1:" .. port, 1, true), err.message)
    m:close()
  end)

  -- 13
  it("times out when no answer comes, and tells a stall from a timeout", function()
    local m = core.multi()
    local t0 = core.now()
    local res, err = m:request { url = url("/never"), timeout = 0.5 }
    assert.is_nil(res)
    assert.are.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    assert.are.equal("timed out after 0.5 s (127.0.0.1:" .. srv.port .. ")", err.message)
    assert.is_true(core.now() - t0 < 1.5)
    res, err = m:request { url = url("/stall"), low_speed_time = 1, timeout = 10 }
    assert.is_nil(res)
    assert.are.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    assert.truthy(err.message:find("^stalled"), err.message)
    m:close()
  end)

  -- 14
  it("sends the request line, Host and the default User-Agent, and nothing after a GET's head", function()
    local m = core.multi()
    local res = assert(m:request { url = url("/echo?x=1"), headers = { "X-Test: hello", "X-Other: a b" } })
    local line, lines, rest = parse_echo(res.body)
    assert.are.equal("GET /echo?x=1 HTTP/1.1", line)
    assert.are.same({ "127.0.0.1:" .. srv.port }, values(lines, "Host"))
    local ua = values(lines, "User-Agent")
    assert.are.equal(1, #ua)
    assert.truthy(ua[1]:find("^taskapi/"), ua[1])
    assert.are.same({ "hello" }, values(lines, "X-Test"))
    assert.are.same({ "a b" }, values(lines, "X-Other"))
    assert.are.same({}, values(lines, "Content-Length"))
    assert.are.same({}, values(lines, "Transfer-Encoding"))
    assert.are.equal("", rest)
    for _, l in ipairs(lines) do assert.truthy(l:find("^[!#$%%&'*+.^_`|~%w-]+: "), l) end
    m:close()
  end)

  it("sends req.user_agent, or a User-Agent from req.headers, in place of the default", function()
    local m = core.multi()
    local _, lines = parse_echo(assert(m:request { url = url("/echo"), user_agent = "mine/1" }).body)
    assert.are.same({ "mine/1" }, values(lines, "User-Agent"))
    _, lines = parse_echo(assert(m:request { url = url("/echo"), headers = { "User-Agent: custom/2" } }).body)
    assert.are.same({ "custom/2" }, values(lines, "User-Agent"))
    m:close()
  end)

  it("sends a body with its Content-Length, byte-exact, and nothing after it", function()
    local m = core.multi()
    local body = "a\0b\r\n\r\nc" .. string.rep("z", 3000)
    for _, method in ipairs { "POST", "PUT", "PATCH" } do
      local res = assert(m:request { url = url("/echo"), method = method, body = body,
                                     headers = { "X-Test: once" } })
      local line, lines, rest = parse_echo(res.body)
      assert.are.equal(method .. " /echo HTTP/1.1", line)
      assert.are.same({ tostring(#body) }, values(lines, "Content-Length"))
      assert.are.same({}, values(lines, "Transfer-Encoding"))
      assert.are.same({ "once" }, values(lines, "X-Test"))
      assert.are.equal(body, rest, method)
    end
    -- a POST without a body says so
    local line, lines, rest = parse_echo(assert(m:request { url = url("/echo"), method = "POST" }).body)
    assert.are.equal("POST /echo HTTP/1.1", line)
    assert.are.same({ "0" }, values(lines, "Content-Length"))
    assert.are.equal("", rest)
    -- a large body (libcurl asks with Expect: 100-continue first; the server answers it)
    local big = bytes(2 * 1048576 + 5)
    line, lines, rest = parse_echo(assert(m:request { url = url("/echo"), method = "POST", body = big }).body)
    assert.are.equal("POST /echo HTTP/1.1", line)
    assert.are.same({ tostring(#big) }, values(lines, "Content-Length"))
    assert.is_true(big == rest, "the large body differs")
    line, lines, rest = parse_echo(assert(m:request { url = url("/echo"), method = "DELETE" }).body)
    assert.are.same({ "127.0.0.1:" .. srv.port }, values(lines, "Host"))
    assert.are.equal("DELETE /echo HTTP/1.1", line)
    assert.are.equal("", rest)
    m:close()
  end)

  -- 15
  it("follows relative Locations: absolute path, relative path, query only", function()
    local m = core.multi()
    for _, c in ipairs {
      { "/redir?to=" .. esc("/echo"), "/echo" },
      { "/d/redir?to=echo", "/d/echo" },
      { "/redir?to=" .. esc("?q=1"), "/redir?q=1" },
      { "/redir?to=" .. esc("/redir?to=" .. esc("/echo")), "/echo", 2 },
    } do
      local res = assert(m:request { url = url(c[1]) })
      assert.are.equal(200, res.status)
      assert.are.equal("GET " .. c[2] .. " HTTP/1.1", (parse_echo(res.body)))
      assert.are.equal(c[3] or 1, res.redirects)
      assert.are.equal(url(c[2]), res.effective_url)
      assert.is_nil(res.headers["location"]) -- the final answer's headers
    end
    m:close()
  end)

  it("follows an absolute Location to another server, without the Authorization header", function()
    local m = core.multi()
    local auth = { "Authorization: Bearer secret", "X-Keep: 1" }
    local res = assert(m:request { url = url("/redir?to=" .. esc(srv2.url .. "/echo")), headers = auth })
    local line, lines = parse_echo(res.body)
    assert.are.equal("GET /echo HTTP/1.1", line)
    assert.are.same({ "127.0.0.1:" .. srv2.port }, values(lines, "Host"))
    assert.are.same({}, values(lines, "Authorization"))
    assert.are.same({ "1" }, values(lines, "X-Keep"))
    assert.are.equal(srv2.url .. "/echo", res.effective_url)
    assert.are.equal(1, res.redirects)
    -- the same origin keeps it
    res = assert(m:request { url = url("/redir?to=" .. esc("/echo")), headers = auth })
    lines = select(2, parse_echo(res.body))
    assert.are.same({ "Bearer secret" }, values(lines, "Authorization"))
    res = assert(m:request { url = url("/redir?to=" .. esc(srv.url .. "/echo")), headers = auth })
    lines = select(2, parse_echo(res.body))
    assert.are.same({ "Bearer secret" }, values(lines, "Authorization"))
    m:close()
  end)

  it("turns a POST into a GET without body after 302 and 303, keeps it after 307 and 308", function()
    local m = core.multi()
    for _, code in ipairs { 302, 303, 307, 308 } do
      local res = assert(m:request { url = url("/redir?code=" .. code .. "&to=" .. esc("/echo")),
                                     method = "POST", body = "abc" })
      local line, lines, rest = parse_echo(res.body)
      assert.are.equal(1, res.redirects)
      if code <= 303 then
        assert.are.equal("GET /echo HTTP/1.1", line, code)
        assert.are.same({}, values(lines, "Content-Length"), code)
        assert.are.equal("", rest, code)
      else
        assert.are.equal("POST /echo HTTP/1.1", line, code)
        assert.are.same({ "3" }, values(lines, "Content-Length"), code)
        assert.are.equal("abc", rest, code)
      end
    end
    m:close()
  end)

  -- RFC 9110 (15.4.4): a 303 is followed with GET. The plain-HTTP path (src/lean.c) does; libcurl
  -- 7.88 (still used for https) keeps CURLOPT_CUSTOMREQUEST for every request of a redirect
  -- chain and sends "PUT /echo" without a body after a 303.
  it("turns a PUT or PATCH into a GET after 303", function()
    local m = core.multi()
    for _, method in ipairs { "PUT", "PATCH" } do
      local res = assert(m:request { url = url("/redir?code=303&to=" .. esc("/echo")), method = method, body = "abc" })
      assert.are.equal("GET /echo HTTP/1.1", (parse_echo(res.body)))
    end
    m:close()
  end)

  it("stops at max_redirects (not retryable) and refuses a redirect to ftp://", function()
    local m = core.multi()
    local res, err = m:request { url = url("/loop"), max_redirects = 3 }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("redirect", 1, true), err.message)
    assert.is_true(server(err), err.message)
    res, err = m:request { url = url("/redir?to=" .. esc("ftp://127.0.0.1/f")) }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_false(err.retryable)
    -- max_redirects = 0 refuses the first
    res, err = m:request { url = url("/redir?to=" .. esc("/echo")), max_redirects = 0 }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    m:close()
  end)

  -- 16
  it("completes 64 transfers in flight, each with its own body", function()
    local m = core.multi()
    local ts = {}
    for i = 1, 64 do ts[assert(m:add { url = url("/slow?id=" .. i) })] = i end
    local n, t0 = 0, core.now()
    while n < 64 and core.now() - t0 < 10 do
      m:perform()
      for _, t in ipairs(m:completed()) do
        local res = assert(t:result())
        assert.are.equal(200, res.status)
        assert.are.equal("id=" .. ts[t], res.body)
        ts[t] = nil
        n = n + 1
        t:close()
      end
      if n < 64 then m:poll(1) end
    end
    assert.are.equal(64, n)
    assert.is_nil(next(ts))
    assert.are.equal(0, m:count())
    m:close()
  end)

  -- 17
  it("reads trace_id, content_type and retry_after from headers, also with response_headers = false", function()
    local m = core.multi()
    for _, keep in ipairs { true, false } do
      local res = assert(m:request { url = url("/meta"), response_headers = keep, trace_header = "X-Trace-ID", json = true })
      assert.are.equal("abc-1", res.trace_id)
      assert.are.equal("application/json", res.content_type)
      assert.are.equal(7, res.retry_after)
      assert.are.same({}, res.json)
      if keep then
        assert.are.equal("7", res.headers["retry-after"])
        assert.are.equal("abc-1", res.headers["x-trace-id"]) -- white space around the value dropped
      else
        assert.is_nil(res.headers)
      end
    end
    m:close()
  end)
end)
