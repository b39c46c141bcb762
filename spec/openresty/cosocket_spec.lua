-- OpenResty: API calls over nginx's cosockets (taskapi.run.cosocket), driven from an nginx worker
-- (spec/openresty/cosocket_app.lua) against the nginx fake: keep-alive (the fake logs nginx's
-- connection number of each request), a create on a connection of its own, chunked answers
-- with exact integers, the body cap, a server closing in the middle of a body, timeouts, the
-- creation faults' `sent` rules, redirects, and TLS against a test CA with and without
-- `lua_ssl_trusted_certificate`.
local nginx = require "taskapi.fake.process"
local server = require "taskapi.fake.server"
local fe = require "support.fake_env"
local cjson = require "cjson"

local q = fe.q

-- Extra locations of the fake: each answers its nginx connection number (`conn`).
local EXTRA = [[
    location = /x/conn {
      content_by_lua_block {
        local b = '{"code":0,"data":{"conn":' .. ngx.var.connection .. '}}'
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Content-Length"] = #b
        ngx.print(b)
      }
    }
    location = /x/chunked {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json; charset=utf-8"
        ngx.header["X-Tripo-Trace-ID"] = "trace-chunked"
        ngx.print('{"code":0,"data":{"conn":' .. ngx.var.connection .. ',"big":9007199254740993,')
        ngx.flush(true)
        ngx.sleep(0.01)
        ngx.print('"text":"' .. string.rep("a", 20000) .. '",')
        ngx.flush(true)
        ngx.print('"n":42}}')
      }
    }
    location = /x/big {
      content_by_lua_block {
        local b = '{"code":0,"data":{"conn":' .. ngx.var.connection .. ',"pad":"' .. string.rep("b", 1000) .. '"}}'
        ngx.header["Content-Type"] = "application/json"
        if ngx.var.arg_chunked then
          ngx.print(b:sub(1, 500))
          ngx.flush(true)
          ngx.print(b:sub(501))
        else
          ngx.header["Content-Length"] = #b
          ngx.print(b)
        end
      }
    }
    location = /x/cut {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Content-Length"] = 1000
        ngx.print('{"code":0,"data":{"conn":' .. ngx.var.connection .. ',')
        ngx.flush(true)
        return ngx.exit(ngx.ERROR)
      }
    }
    location = /x/slow {
      content_by_lua_block {
        ngx.sleep(tonumber(ngx.var.arg_s) or 2)
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"code":0,"data":{"conn":' .. ngx.var.connection .. '}}')
      }
    }
    location = /x/stallfile {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/octet-stream"
        ngx.header["Content-Length"] = 200000
        ngx.print(string.rep("a", 100000))
        ngx.flush(true)
        ngx.sleep(3)
        ngx.print(string.rep("b", 100000))
      }
    }
    location = /x/latefile {
      content_by_lua_block {
        ngx.sleep(tonumber(ngx.var.arg_s) or 1)
        ngx.header["Content-Type"] = "application/octet-stream"
        ngx.print(string.rep("c", 1000))
      }
    }
    location = /x/close {
      content_by_lua_block {
        local b = '{"code":0,"data":{"conn":' .. ngx.var.connection .. '}}'
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Content-Length"] = #b
        ngx.header["Connection"] = "close"
        ngx.print(b)
      }
    }
    location = /x/once {
      content_by_lua_block {
        -- a server that drops a kept-alive connection when it is used again, without a word
        if tonumber(ngx.var.connection_requests) > 1 then return ngx.exit(444) end
        local b = '{"code":0,"data":{"conn":' .. ngx.var.connection .. '}}'
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Content-Length"] = #b
        ngx.print(b)
      }
    }
    location = /x/redirect { return 302 /x/conn; }
    location = /x/loop { return 302 /x/loop; }
]]

local function app_config(extra_http)
  local app = nginx.root() .. "/spec/openresty/cosocket_app.lua"
  return {
    ttl = 300,
    http = "  lua_socket_log_errors off;\n" .. (extra_http or "") ..
      '  init_by_lua_block { require "taskapi"; package.loaded.cosocket_app = dofile("' .. app .. '") }',
    locations = "    location = /do { content_by_lua_block { require('cosocket_app').handle() } }",
  }
end

-- Runs steps in the worker; returns the results array.
local function run(app, steps, client)
  local body = cjson.encode { steps = steps, client = client }
  local p = assert(io.popen("curl -s -m 60 -H 'Content-Type: application/json' --data-binary " .. q(body) .. " " ..
    q(app.url .. "/do")))
  local out = p:read("*a")
  p:close()
  local ok, doc = pcall(cjson.decode, out)
  assert(ok and type(doc) == "table", "the worker answered: " .. out .. "\n" .. app.log())
  return doc.results, doc
end

local function get(url, extra)
  local req = { url = url, json = true, headers = { "Accept: application/json" }, timeout = 5 }
  for k, v in pairs(extra or {}) do req[k] = v end
  return { op = "transfer", req = req }
end

local function conn_of(r)
  assert(r.res, "no answer: " .. cjson.encode(r.err or r))
  return r.res.json.data.conn
end

describe("OpenResty API calls over cosockets #openresty", function()
  local env, app

  setup(function()
    env = fe.start { locations = EXTRA }
    app = assert(nginx.start(app_config()))
  end)

  teardown(function()
    if app then app.stop() end
    if env then env:stop() end
  end)

  -- a download on libcurl (the worker's driver) whose on_progress raises: the request ends
  -- with that error at once, not when the file would have ended (it stalls 3 s halfway),
  -- and no file or part file is left, then or after the stall
  it("ends a download at once when its on_progress raises; no file, no part file", function()
    local dir = fe.tmpdir()
    local req = { url = env.url .. "/x/stallfile", path = dir .. "/f.bin", part = dir .. "/.f.bin.part", timeout = 20 }
    local r = run(app, { { op = "transfer_raising", req = req } })[1]
    assert.equal("boom in ngx", r.raised, cjson.encode(r))
    assert.is_true(r.seconds < 2.5, "the request took " .. r.seconds .. " s")
    assert.same({}, fe.ls(dir))
    fe.sh("sleep 3.5")
    assert.same({}, fe.ls(dir))
    fe.rmdir(dir)
  end)

  -- libcurl transfers in one worker are capped (taskapi.run.ngx.MAX_TRANSFERS, as the plain
  -- scheduler's): 4 downloads of a file that answers after 1 s, 2 at a time, take 2 s at
  -- least (1 s when they all run at once); all 4 complete
  it("runs at most MAX_TRANSFERS libcurl transfers at once; the others wait for a slot", function()
    local dir = fe.tmpdir()
    local req = { url = env.url .. "/x/latefile?s=1", path = dir .. "/f", timeout = 20 }
    local free = { url = req.url, path = dir .. "/g", timeout = 20 }
    local r = run(app, { { op = "parallel", n = 4, cap = 2, req = req }, { op = "parallel", n = 4, cap = 64, req = free } })
    assert.equal(4, r[1].ok, cjson.encode(r[1]))
    assert.is_true(r[1].seconds >= 1.9, "4 downloads, 2 at a time, took " .. r[1].seconds .. " s")
    assert.equal(4, r[2].ok, cjson.encode(r[2]))
    assert.is_true(r[2].seconds < r[1].seconds, "without the cap they run at once: " .. r[2].seconds .. " s")
    fe.rmdir(dir)
  end)

  it("keeps the connection alive: five status calls on one connection, no timer running", function()
    local id = env:add { provider = "tripo", queue = 0, run = 0 }
    local mark = env:mark()
    local steps = {}
    for i = 1, 5 do steps[i] = { op = "status", id = id } end
    local results, doc = run(app, steps, { provider = "tripo", api_key = fe.KEY, base_url = env.base.tripo, min_interval = 0 })
    for _, r in ipairs(results) do
      assert.is_nil(r.err and r.err.text)
      assert.equal("succeeded", r.task.state)
    end
    assert.is_false(doc.driving, "the libcurl driver ran for API calls")
    local log = fe.status_requests(env:log(mark), id)
    assert.equal(5, #log)
    assert.is_number(log[1].connection)
    for i = 2, 5 do assert.equal(log[1].connection, log[i].connection) end
  end)

  it("sends each create over a connection of its own, closed after it; status calls share theirs", function()
    local c = { provider = "tripo", api_key = fe.KEY, base_url = env.base.tripo, min_interval = 0, retries = 0 }
    local params = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a cat", fake = { queue = 0, run = 0 } }
    local mark = env:mark()
    local results = run(app, {
      { op = "create", params = params }, { op = "create", params = params },
      { op = "status", id = "x" }, { op = "status", id = "y" },
    }, c)
    assert.is_string(results[1].id, cjson.encode(results[1]))
    assert.is_string(results[2].id)
    local log = env:log(mark)
    assert.equal(4, #log)
    assert.equal("POST", log[1].method)
    assert.are_not.equal(log[1].connection, log[2].connection)
    assert.are_not.equal(log[2].connection, log[3].connection) -- the create's connection was closed
    assert.are_not.equal(log[1].connection, log[3].connection)
    assert.equal(log[3].connection, log[4].connection)
  end)

  it("reads chunked answers: exact integers, headers, and the connection is kept", function()
    local results = run(app, {
      get(env.url .. "/x/chunked", { response_headers = true, trace_header = "X-Tripo-Trace-ID" }), get(env.url .. "/x/chunked"),
      get(env.url .. "/x/conn"),
    })
    local r = results[1].res
    assert.equal(200, r.status)
    assert.equal("application/json", r.content_type)
    assert.equal("trace-chunked", r.trace_id)
    assert.equal("chunked", r.headers["transfer-encoding"])
    assert.equal("9007199254740993", r.json.data.big) -- beyond 2^53: an exact string, not a rounded double
    assert.equal(42, r.json.data.n)
    assert.equal(20000, #r.json.data.text)
    assert.is_nil(r.body)
    assert.equal(conn_of(results[1]), conn_of(results[2]))
    assert.equal(conn_of(results[1]), conn_of(results[3]))
  end)

  it("refuses a body over max_body (Content-Length and chunked) and does not reuse that connection", function()
    for _, url in ipairs { env.url .. "/x/big", env.url .. "/x/big?chunked=1" } do
      local results = run(app, {
        get(env.url .. "/x/conn"), get(url, { max_body = 200 }), get(env.url .. "/x/conn"), get(url),
      })
      local e = results[2].err
      assert.truthy(e, cjson.encode(results[2]))
      assert.equal("bad_response", e.kind)
      assert.truthy(e.message:find("larger than 200 bytes", 1, true), e.message)
      assert.is_false(e.retryable)
      assert.are_not.equal(conn_of(results[1]), conn_of(results[3]))
      assert.equal(1000, #results[4].res.json.data.pad) -- under the default cap it reads
    end
  end)

  it("a server closing in the middle of the body: transport error, retryable, sent; a new connection after", function()
    local results = run(app, { get(env.url .. "/x/conn"), get(env.url .. "/x/cut"), get(env.url .. "/x/conn") })
    local e = results[2].err
    assert.truthy(e, cjson.encode(results[2]))
    assert.equal("transport", e.kind)
    assert.is_true(e.retryable)
    assert.is_true(e.sent)
    assert.truthy(e.message:find("127.0.0.1:" .. env.server.port, 1, true), e.message)
    assert.are_not.equal(conn_of(results[1]), conn_of(results[3]))
  end)

  it("Connection: close is honoured: the next call opens a new connection", function()
    local results = run(app, { get(env.url .. "/x/close"), get(env.url .. "/x/conn"), get(env.url .. "/x/conn") })
    assert.are_not.equal(conn_of(results[1]), conn_of(results[2]))
    assert.equal(conn_of(results[2]), conn_of(results[3]))
  end)

  it("a kept-alive connection the server drops before answering: sent once more, on a new connection", function()
    local c = { provider = "tripo", api_key = fe.KEY, base_url = env.base.tripo, min_interval = 0, retries = 0 }
    local params = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a cat", fake = { queue = 0, run = 0 } }
    local mark = env:mark()
    local results = run(app, { get(env.url .. "/x/once"), get(env.url .. "/x/once"), get(env.url .. "/x/once"),
      { op = "create", params = params } }, c)
    for i = 1, 3 do assert.truthy(results[i].res, cjson.encode(results[i])) end
    assert.are_not.equal(conn_of(results[1]), conn_of(results[2]))
    assert.are_not.equal(conn_of(results[2]), conn_of(results[3]))
    -- and the connection of such a second attempt is not kept for a create
    assert.is_string(results[4].id, cjson.encode(results[4]))
    local log = env:log(mark)
    assert.equal(1, #log)
    for i = 1, 3 do assert.are_not.equal(conn_of(results[i]), log[1].connection) end
  end)

  it("times out per request: kind timeout, retryable, on time, and that connection is not reused", function()
    local results = run(app, {
      get(env.url .. "/x/conn"), get(env.url .. "/x/slow?s=2", { timeout = 0.3 }), get(env.url .. "/x/conn"),
      get(env.url .. "/x/slow?s=2", { timeout = 5, low_speed_time = 0.3 }),
    })
    local e = results[2].err
    assert.truthy(e, cjson.encode(results[2]))
    assert.equal("timeout", e.kind)
    assert.is_true(e.retryable)
    assert.is_true(e.sent)
    assert.truthy(e.message:find("timed out after 0.3 s", 1, true), e.message)
    assert.is_true(results[2].seconds >= 0.25 and results[2].seconds < 1, "took " .. results[2].seconds)
    assert.are_not.equal(conn_of(results[1]), conn_of(results[3]))
    local s = results[4].err
    assert.equal("timeout", s.kind)
    assert.truthy(s.message:find("stalled", 1, true), s.message)
    assert.is_true(results[4].seconds < 1, "took " .. results[4].seconds)
  end)

  it("follows redirects (at most max_redirects) and keeps the res shape", function()
    local results = run(app, { get(env.url .. "/x/redirect"), get(env.url .. "/x/loop") })
    local r = results[1].res
    assert.equal(200, r.status)
    assert.equal(1, r.redirects)
    assert.equal(env.url .. "/x/conn", r.effective_url)
    local e = results[2].err
    assert.equal("transport", e.kind)
    assert.is_false(e.retryable)
    assert.truthy(e.message:find("too many redirects", 1, true) and e.message:find("max 5", 1, true), e.message)
  end)

  it("a refused connection is not sent (a create is retried), an answer cut or reset is (never sent again)", function()
    local c = { provider = "tripo", api_key = fe.KEY, min_interval = 0, retries = 2, backoff = 0.01, max_backoff = 0.02,
      timeout = 2 }
    local params = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a cat", fake = { queue = 0, run = 0 } }
    -- nothing listens on the port of a stopped nginx
    local gone = assert(nginx.start { ttl = 30 })
    gone.stop()
    c.base_url = gone.url .. fe.PATHS.tripo
    local r = run(app, { { op = "create", params = params } }, c)[1]
    assert.equal("transport", r.err.kind)
    assert.is_false(r.err.sent)
    assert.is_nil(r.err.indeterminate)
    assert.is_true(r.err.retryable)
    c.base_url = env.base.tripo
    for _, fault in ipairs { "reset", "cut" } do
      local f = fe.sh("curl -s -H 'Content-Type: application/json' --data-binary " ..
        q(cjson.encode { on = "create", provider = "tripo", fault = fault }) .. " " .. q(env.url .. "/_fake/faults"))
      assert.truthy(f:find("true", 1, true), f)
      local mark = env:mark()
      r = run(app, { { op = "create", params = params } }, c)[1]
      assert.truthy(r.err, cjson.encode(r))
      assert.is_true(r.err.indeterminate, fault .. ": " .. tostring(r.err.text))
      assert.equal(1, #fe.matching(env:log(mark), "/generation/"), fault .. ": the create was sent again")
    end
  end)

  it("answers the same res as the C module: status, content type, trace id, Retry-After, JSON or body", function()
    local id = env:add { provider = "tripo", queue = 0, run = 0 }
    local limited = env:add { provider = "tripo", queue = 0, run = 0, faults = { rate_limit = { count = 5, retry_after = 7 } } }
    local key = { "Authorization: Bearer " .. fe.KEY, "Accept: application/json" }
    local reqs = {
      { url = env.base.tripo .. "/tasks/" .. id, headers = key },
      { url = env.base.tripo .. "/tasks/nosuchtask", headers = key },          -- 404, JSON error
      { url = env.base.tripo .. "/tasks/" .. limited, headers = key },         -- 429, Retry-After
      { url = env.url .. "/x/chunked", response_headers = true },
      { url = env.url .. "/x/redirect" },
      { url = env.url .. "/static/files/none" },                               -- 404, an HTML body
      { url = env.base.tripo .. "/tasks/" .. id, headers = key, method = "POST", body = "{}" },
    }
    -- half name the trace header (both transports must then give trace_id), half do not
    for i = 1, #reqs do if i % 2 == 0 or i == 1 then reqs[i].trace_header = "X-Tripo-Trace-ID" end end
    local steps = {}
    for i, r in ipairs(reqs) do
      r.json, r.timeout = true, 5
      if r.response_headers == nil then r.response_headers = false end
      steps[i] = { op = "both", req = r }
    end
    local results = run(app, steps)
    -- the fake signs file links and numbers request ids per request, the two transports use two
    -- connections: keep the fields' names only
    local function strip(res)
      local out = res.json and res.json.data and res.json.data.output
      if type(out) == "table" then for k in pairs(out) do out[k] = true end end
      if res.json and res.json.request_id then res.json.request_id = true end
      if res.json and res.json.data and res.json.data.conn then res.json.data.conn = true end -- two connections
    end
    for i, r in ipairs(results) do
      local a, b = r.curl, r.cos
      strip(a)
      strip(b)
      assert.is_nil(a.err, cjson.encode(a))
      assert.is_nil(b.err, cjson.encode(b))
      for _, k in ipairs { "status", "content_type", "retry_after", "redirects", "effective_url", "json", "body" } do
        assert.same(a[k], b[k], "request " .. i .. ": " .. k)
      end
      -- the fake's trace ids differ per request; the constant one of /x/chunked must match
      assert.equal(type(a.trace_id), type(b.trace_id), "request " .. i .. ": trace_id")
      if i == 4 then assert.equal("trace-chunked", b.trace_id) end
      if i == 1 then assert.is_string(b.trace_id, "a Tripo answer with trace_header") end
      if i == 3 then assert.is_nil(b.trace_id, "no trace_header, no trace_id") end
      assert.equal(a.json_error ~= nil, b.json_error ~= nil, "request " .. i .. ": json_error")
      if a.headers then
        a.headers.date, b.headers.date = nil, nil
        assert.same(a.headers, b.headers, "request " .. i .. ": headers")
      end
    end
    assert.equal(429, results[3].cos.status)
    assert.equal(7, results[3].cos.retry_after)
    assert.equal(404, results[6].cos.status)
    assert.is_string(results[6].cos.body)
  end)

  it("checks its input before any request and keeps the API key out of errors", function()
    local results = run(app, {
      { op = "transfer", req = { url = "ftp://127.0.0.1/x", json = true } },
      { op = "transfer", req = { url = env.url .. "/x/conn", json = true, headers = { "X-Bad: a\r\nInjected: b" } } },
      { op = "transfer", req = { url = env.url .. "/x/conn", json = true, method = "GET", body = "x" } },
      { op = "transfer", req = { url = env.url .. "/x/conn", json = true, timeout = "1" } },
    })
    for i = 1, 4 do assert.equal("invalid_argument", results[i].err.kind, cjson.encode(results[i])) end
    assert.matches("req.timeout must be a number from 0 to 1e12", results[4].err.message, 1, true)
    local gone = assert(nginx.start { ttl = 30 })
    gone.stop()
    local r = run(app, { { op = "status", id = "abc" } },
      { provider = "tripo", api_key = fe.KEY, base_url = gone.url, min_interval = 0, retries = 0 })[1]
    fe.check_err(setmetatable(r.err, { __tostring = function(e) return e.text end }), "transport")
  end)

  it("a host name without nginx's resolver directive: a transport error that says to set it", function()
    local r = run(app, { get("http://taskapi-nowhere.invalid/x") })[1]
    assert.truthy(r.err, cjson.encode(r))
    assert.equal("transport", r.err.kind)
    assert.is_false(r.err.sent)
    assert.truthy(r.err.message:find("`resolver` directive", 1, true), r.err.message)
  end)
end)

-- The PKI of the TLS specs, made at run time by openssl: a CA, a leaf for 127.0.0.1 and one
-- for wrong.example only.
local function must(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok == true or ok == 0, "command failed: " .. cmd)
end

local function make_pki(d)
  fe.write(d .. "/leaf.ext", "basicConstraints = CA:FALSE\nsubjectAltName = IP:127.0.0.1\n" ..
    "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n")
  fe.write(d .. "/wrong.ext", "basicConstraints = CA:FALSE\nsubjectAltName = DNS:wrong.example\n" ..
    "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n")
  fe.write(d .. "/ca.ext", "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n")
  must("openssl ecparam -genkey -name prime256v1 -noout -out " .. q(d .. "/ca.key"))
  must("openssl req -new -x509 -key " .. q(d .. "/ca.key") .. " -subj '/CN=taskapi cosocket test CA' -days 2 " ..
    "-addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' -out " .. q(d .. "/ca.pem"))
  must("openssl ecparam -genkey -name prime256v1 -noout -out " .. q(d .. "/leaf.key"))
  must("openssl req -new -key " .. q(d .. "/leaf.key") .. " -subj '/CN=127.0.0.1' -out " .. q(d .. "/leaf.csr"))
  must("openssl x509 -req -in " .. q(d .. "/leaf.csr") .. " -CA " .. q(d .. "/ca.pem") .. " -CAkey " .. q(d .. "/ca.key") ..
    " -CAcreateserial -days 2 -extfile " .. q(d .. "/leaf.ext") .. " -out " .. q(d .. "/leaf.pem"))
  must("openssl ecparam -genkey -name prime256v1 -noout -out " .. q(d .. "/wrong.key"))
  must("openssl req -new -key " .. q(d .. "/wrong.key") .. " -subj '/CN=wrong.example' -out " .. q(d .. "/wrong.csr"))
  must("openssl x509 -req -in " .. q(d .. "/wrong.csr") .. " -CA " .. q(d .. "/ca.pem") .. " -CAkey " .. q(d .. "/ca.key") ..
    " -CAcreateserial -days 2 -extfile " .. q(d .. "/wrong.ext") .. " -out " .. q(d .. "/wrong.pem"))
end

describe("OpenResty API calls over TLS cosockets #openresty", function()
  local pki, https, wrong, trusted, untrusted, id

  setup(function()
    pki = fe.tmpdir()
    make_pki(pki)
    https = assert(server.start { ttl = 300, listen_opts = " ssl",
      server = "    ssl_certificate " .. pki .. "/leaf.pem;\n    ssl_certificate_key " .. pki .. "/leaf.key;\n" })
    local p = assert(io.popen("curl -s --cacert " .. q(pki .. "/ca.pem") .. " -H 'Content-Type: application/json' " ..
      "--data-binary '{\"provider\":\"tripo\",\"queue\":0,\"run\":0}' " .. q(https.url .. "/_fake/tasks")))
    id = p:read("*a"):match('"id"%s*:%s*"([^"]+)"')
    p:close()
    assert(id, "no task on the https fake")
    wrong = assert(server.start { ttl = 300, listen_opts = " ssl",
      server = "    ssl_certificate " .. pki .. "/wrong.pem;\n    ssl_certificate_key " .. pki .. "/wrong.key;\n" })
    trusted = assert(nginx.start(app_config("  lua_ssl_trusted_certificate " .. pki .. "/ca.pem;\n")))
    untrusted = assert(nginx.start(app_config()))
  end)

  teardown(function()
    for _, s in ipairs { trusted, untrusted, https, wrong } do if s then s.stop() end end
    if pki then fe.rmdir(pki) end
  end)

  local function client(extra)
    local c = { provider = "tripo", api_key = fe.KEY, base_url = https.url .. fe.PATHS.tripo, min_interval = 0, retries = 0 }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end

  it("verifies against lua_ssl_trusted_certificate and keeps the TLS connection alive", function()
    local mark = fe.sh("curl -s --cacert " .. q(pki .. "/ca.pem") .. " " .. q(https.url .. "/_fake/log"))
    mark = #cjson.decode(mark)
    local results = run(trusted, { { op = "status", id = id }, { op = "status", id = id }, { op = "status", id = id } },
      client())
    for _, r in ipairs(results) do
      assert.truthy(r.task, cjson.encode(r))
      assert.equal("succeeded", r.task.state)
    end
    local log = cjson.decode(fe.sh("curl -s --cacert " .. q(pki .. "/ca.pem") .. " " .. q(https.url .. "/_fake/log")))
    local conns = {}
    for i = mark + 1, #log do conns[#conns + 1] = log[i].connection end
    assert.equal(3, #conns)
    assert.equal(conns[1], conns[2])
    assert.equal(conns[1], conns[3])
  end)

  it("without a trusted CA: transport error, not retryable, that says to set lua_ssl_trusted_certificate", function()
    os.execute("echo TEST-UNTRUSTED >> /tmp/cos/dbg.log")
    local r = run(untrusted, { { op = "status", id = id } }, client({ retries = 3 }))[1]
    assert.truthy(r.err, cjson.encode(r))
    assert.equal("transport", r.err.kind)
    assert.is_false(r.err.retryable, r.err.message)
    assert.truthy(r.err.message:find("TLS error with 127.0.0.1:" .. https.port, 1, true), r.err.message)
    assert.truthy(r.err.message:find("lua_ssl_trusted_certificate", 1, true), r.err.message)
    assert.truthy(r.err.message:find("insecure = true", 1, true), r.err.message)
    assert.is_true(r.seconds < 1, "a TLS failure is not retried (took " .. r.seconds .. " s)")
    -- ten more: nginx reports a failed verification in two ways (see taskapi.run.cosocket); each is
    -- a TLS error, and no request reaches the server
    local log_len = function()
      return #cjson.decode(fe.sh("curl -s --cacert " .. q(pki .. "/ca.pem") .. " " .. q(https.url .. "/_fake/log")))
    end
    local before = log_len()
    local steps = {}
    for i = 1, 10 do steps[i] = get(https.url .. fe.PATHS.tripo .. "/tasks/" .. id, { headers = { "Authorization: Bearer " .. fe.KEY } }) end
    for _, x in ipairs(run(untrusted, steps)) do
      assert.truthy(x.err, cjson.encode(x))
      assert.equal("transport", x.err.kind)
      assert.is_false(x.err.retryable)
      assert.is_false(x.err.sent)
      assert.truthy(x.err.message:find("TLS error", 1, true) and x.err.message:find("lua_ssl_trusted_certificate", 1, true),
        x.err.message)
    end
    assert.equal(before, log_len())
  end)

  it("checks the host name: a certificate of the trusted CA for another name fails, not retryable", function()
    local r = run(trusted, { get(wrong.url .. "/_fake/log", { timeout = 5 }) })[1]
    assert.truthy(r.err, cjson.encode(r))
    assert.equal("transport", r.err.kind)
    assert.is_false(r.err.retryable)
    assert.is_false(r.err.sent)
    -- nginx says "certificate host mismatch", or (see taskapi.run.cosocket) only that it did not verify
    assert.truthy(r.err.message:find("host mismatch", 1, true) or r.err.message:find("did not verify", 1, true),
      r.err.message)
    assert.truthy(r.err.message:find("not for 127.0.0.1", 1, true), r.err.message)
  end)

  it("insecure = true skips verification; ca_file gets a clear error before any request", function()
    local r = run(untrusted, { { op = "status", id = id } }, client({ insecure = true }))[1]
    assert.truthy(r.task, cjson.encode(r))
    assert.equal("succeeded", r.task.state)
    local before = #cjson.decode(fe.sh("curl -s --cacert " .. q(pki .. "/ca.pem") .. " " .. q(https.url .. "/_fake/log")))
    r = run(trusted, { { op = "status", id = id } }, client({ ca_file = pki .. "/ca.pem" }))[1]
    assert.truthy(r.err, cjson.encode(r))
    assert.equal("invalid_argument", r.err.kind)
    assert.truthy(r.err.message:find("ca_file", 1, true) and r.err.message:find("lua_ssl_trusted_certificate", 1, true),
      r.err.message)
    local after = #cjson.decode(fe.sh("curl -s --cacert " .. q(pki .. "/ca.pem") .. " " .. q(https.url .. "/_fake/log")))
    assert.equal(before, after)
  end)
end)
