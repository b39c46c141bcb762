-- TLS: the real C module over HTTPS against the nginx fake, with a CA and certificates made at
-- run time by openssl. Verification is on by default; `ca_file` adds a CA; an unknown CA, a
-- wrong host name and an expired certificate each fail with kind "transport", not retryable,
-- and libcurl's words for which; `insecure = true` works and warns once on stderr; no
-- environment variable turns verification off; https -> http redirects are refused and
-- redirects are capped.
local fe = require "support.fake_env"
local server = require "taskapi.fake.server"
local taskapi = require "taskapi"

local q = fe.q
local LUA = jit and "luajit" or "lua5.4"
local CPATH = "./build/" .. LUA .. "/?.so"

local function run(cmd)
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0, ok end -- Lua 5.1 / LuaJIT without 5.2 compat
  return ok == true, code
end

local function must(cmd)
  local ok, code = run(cmd .. " >/dev/null 2>&1")
  assert(ok, "command failed (" .. tostring(code) .. "): " .. cmd)
end

-- The PKI: ca (trusted through ca_file), leaf certificates for 127.0.0.1 (good), for
-- wrong.example only (wrong name), an expired one (openssl ca -startdate/-enddate in the past),
-- and a self-signed one from a CA nobody trusts.
local function make_pki(d)
  local function key(name) must("openssl ecparam -genkey -name prime256v1 -noout -out " .. q(d .. "/" .. name .. ".key")) end
  local function csr(name, cn)
    key(name)
    must("openssl req -new -key " .. q(d .. "/" .. name .. ".key") .. " -subj " .. q("/CN=" .. cn) ..
      " -out " .. q(d .. "/" .. name .. ".csr"))
  end
  fe.write(d .. "/ca.cnf", table.concat({
    "[ ca ]", "default_ca = ca_default",
    "[ ca_default ]", "dir = " .. d, "database = " .. d .. "/index.txt",
    "new_certs_dir = " .. d .. "/newcerts", "serial = " .. d .. "/serial", "default_md = sha256",
    "policy = policy_any", "unique_subject = no", "email_in_dn = no", "default_days = 30",
    "[ policy_any ]", "commonName = supplied",
    "[ v3_ca ]", "basicConstraints = critical, CA:TRUE", "keyUsage = critical, keyCertSign, cRLSign",
    "subjectKeyIdentifier = hash",
    "[ leaf_ip ]", "basicConstraints = CA:FALSE", "subjectAltName = IP:127.0.0.1",
    "keyUsage = critical, digitalSignature", "extendedKeyUsage = serverAuth",
    "[ leaf_wrong ]", "basicConstraints = CA:FALSE", "subjectAltName = DNS:wrong.example",
    "keyUsage = critical, digitalSignature", "extendedKeyUsage = serverAuth",
    "[ req ]", "distinguished_name = dn", "[ dn ]", "",
  }, "\n"))
  os.execute("mkdir -p " .. q(d .. "/newcerts"))
  fe.write(d .. "/index.txt", "")
  fe.write(d .. "/serial", "1000\n")
  local cnf = " -config " .. q(d .. "/ca.cnf")
  -- the CA
  key("ca")
  must("openssl req -new -x509" .. cnf .. " -extensions v3_ca -key " .. q(d .. "/ca.key") ..
    " -subj '/CN=taskapi test CA' -days 2 -out " .. q(d .. "/ca.pem"))
  local function sign(name, ext, extra)
    must("openssl ca -batch -notext" .. cnf .. " -cert " .. q(d .. "/ca.pem") .. " -keyfile " .. q(d .. "/ca.key") ..
      " -extensions " .. ext .. " -in " .. q(d .. "/" .. name .. ".csr") .. " -out " .. q(d .. "/" .. name .. ".pem") ..
      " " .. extra)
  end
  csr("good", "127.0.0.1");          sign("good", "leaf_ip", "-days 2")
  csr("wrong", "wrong.example");     sign("wrong", "leaf_wrong", "-days 2")
  csr("expired", "127.0.0.1");       sign("expired", "leaf_ip", "-startdate 20200101000000Z -enddate 20200201000000Z")
  -- a self-signed certificate for 127.0.0.1 from nowhere
  key("unknown")
  must("openssl req -new -x509" .. cnf .. " -extensions leaf_ip -key " .. q(d .. "/unknown.key") ..
    " -subj '/CN=127.0.0.1' -days 2 -out " .. q(d .. "/unknown.pem"))
end

-- POSTs a scripted task to an HTTPS fake, trusting our CA (or not checking, for the bad ones).
local function add_task(url, spec_json, ca)
  local tls = ca and ("--cacert " .. q(ca)) or "-k"
  local p = assert(io.popen("curl -s " .. tls .. " -H 'Content-Type: application/json' --data-binary " ..
    q(spec_json) .. " " .. q(url .. "/_fake/tasks")))
  local out = p:read("*a")
  p:close()
  local id = out:match('"id"%s*:%s*"([^"]+)"')
  assert(id, "the fake made no task: " .. out)
  return id
end

describe("TLS", function()
  local pki, plain, servers, ids, dir = nil, nil, {}, {}, nil

  local function base(name) return servers[name].url .. fe.PATHS.tripo end

  local function client(name, extra)
    local opts = { provider = "tripo", api_key = fe.KEY, base_url = base(name), min_interval = 0,
      retries = 0, backoff = 0.01, max_backoff = 0.02 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return assert(taskapi.new(opts))
  end

  setup(function()
    pki = fe.tmpdir()
    make_pki(pki)
    plain = assert(server.start { ttl = 300 })
    local redirects = table.concat({
      -- https -> http: must be refused (the target is a live plain-HTTP fake)
      "    location /tohttp/ { rewrite ^/tohttp(/.*)$ " .. plain.url .. "$1 redirect; }",
      -- https -> https on the same server: followed
      "    location /tohttps/ { rewrite ^/tohttps(/.*)$ $1 redirect; }",
      "    location /loop/ { return 302 /loop/; }",
    }, "\n")
    for _, name in ipairs({ "good", "wrong", "expired", "unknown" }) do
      servers[name] = assert(server.start {
        ttl = 300, listen_opts = " ssl",
        server = "    ssl_certificate " .. pki .. "/" .. name .. ".pem;\n    ssl_certificate_key " .. pki .. "/" ..
          name .. ".key;\n",
        locations = name == "good" and redirects or nil,
      })
      assert.equal("https", servers[name].url:match("^(%a+)://"))
      ids[name] = add_task(servers[name].url, '{"provider":"tripo","queue":0,"run":0,"file_size":2000}',
        name == "good" and pki .. "/ca.pem" or nil)
    end
  end)

  teardown(function()
    for _, s in pairs(servers) do s.stop() end
    if plain then plain.stop() end
    fe.rmdir(pki)
  end)

  before_each(function() dir = fe.tmpdir() end)
  after_each(function() fe.rmdir(dir) end)

  it("makes a CA whose certificates openssl itself verifies (and the expired one it rejects)", function()
    local ca = q(pki .. "/ca.pem")
    assert.is_true((run("openssl verify -CAfile " .. ca .. " " .. q(pki .. "/good.pem") .. " >/dev/null 2>&1")))
    assert.is_false((run("openssl verify -CAfile " .. ca .. " " .. q(pki .. "/expired.pem") .. " >/dev/null 2>&1")))
    assert.is_true((run("openssl x509 -checkend 0 -noout -in " .. q(pki .. "/good.pem") .. " >/dev/null")))
    assert.is_false((run("openssl x509 -checkend 0 -noout -in " .. q(pki .. "/expired.pem") .. " >/dev/null")))
  end)

  it("works with ca_file: status and download over https", function()
    local c = client("good", { ca_file = pki .. "/ca.pem" })
    local task, err = c:status(ids.good)
    assert.is_nil(err)
    assert.equal(ids.good, task.id)
    assert.is_true(task.ok)
    assert.truthy(task.outputs[1].url:match("^https://127%.0%.0%.1:"), "file links follow the scheme")
    local files, derr = c:download(task, { dir = dir })
    assert.is_nil(derr)
    assert.is_true(#files >= 1)
    for _, f in ipairs(files) do assert.equal(2000, f.bytes) end
    assert.same({}, (function() local t = {} for _, n in ipairs(fe.ls(dir)) do if n:find("%.part$") then t[#t + 1] = n end end return t end)())
  end)

  it("verifies by default: our CA is not in the system store", function()
    local c = client("good")
    local task, err = c:status(ids.good)
    assert.is_nil(task)
    fe.check_err(err, "transport")
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("TLS error", 1, true), err.message)
    assert.truthy(err.message:find("certificate", 1, true), err.message)
  end)

  -- name, what the message must say (libcurl's error text)
  local BAD = {
    { "unknown", "self%-signed certificate" },
    { "wrong", "no alternative certificate subject name matches target host name '127%.0%.0%.1'" },
    { "expired", "certificate has expired" },
  }
  for _, row in ipairs(BAD) do
    local name, pattern = row[1], row[2]
    it("fails on the " .. name .. " certificate: transport, not retryable, says which", function()
      local c = client(name, { ca_file = pki .. "/ca.pem", retries = 3 })
      local t0 = fe.now()
      local task, err = c:status(ids[name])
      assert.is_nil(task)
      fe.check_err(err, "transport")
      assert.is_false(err.retryable)
      assert.is_nil(err.status)
      assert.truthy(err.message:find(pattern), "message: " .. err.message)
      assert.truthy(err.message:find("127.0.0.1:" .. servers[name].port, 1, true), err.message)
      assert.is_true(fe.now() - t0 < 1, "a TLS failure is not retried")
      -- and a download of a link on that host fails the same way, leaving nothing
      local files, derr = c:download({ id = ids[name], provider = "tripo", outputs = {
        { name = "model", url = servers[name].url .. "/files/x/model.glb", kind = "model" } },
        state = "succeeded", ok = true, done = true }, { dir = dir })
      assert.is_nil(files)
      fe.check_err(derr, "transport")
      assert.truthy(derr.message:find(pattern), derr.message)
      assert.same({}, fe.ls(dir))
    end)
  end

  it("insecure = true works and warns once on stderr (in a child process)", function()
    local script = dir .. "/insecure.lua"
    fe.write(script, table.concat({
      "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path",
      "package.cpath = " .. string.format("%q", CPATH) .. " .. ';' .. package.cpath",
      "local taskapi = require 'taskapi'",
      "for _, name in ipairs({ 'unknown', 'expired', 'wrong', 'unknown' }) do",
      "  local urls = { unknown = " .. string.format("%q", base("unknown")) .. ", expired = " ..
        string.format("%q", base("expired")) .. ", wrong = " .. string.format("%q", base("wrong")) .. " }",
      "  local ids = { unknown = " .. string.format("%q", ids.unknown) .. ", expired = " ..
        string.format("%q", ids.expired) .. ", wrong = " .. string.format("%q", ids.wrong) .. " }",
      "  local c = assert(taskapi.new{ provider = 'tripo', api_key = 'test-key', base_url = urls[name],",
      "    insecure = true, retries = 0, min_interval = 0 })",
      "  local t, err = c:status(ids[name])",
      "  io.write(name, ' ', t and t.state or tostring(err), '\\n')",
      "end",
    }, "\n"))
    local p = assert(io.popen(LUA .. " " .. q(script) .. " 2>" .. q(dir .. "/stderr.txt")))
    local out = p:read("*a")
    p:close()
    local err = fe.read(dir .. "/stderr.txt")
    assert.equal("unknown succeeded\nexpired succeeded\nwrong succeeded\nunknown succeeded\n", out)
    assert.equal("taskapi: warning: TLS verification is off (insecure = true)\n", err)
  end)

  it("insecure must be a boolean: no truthy string turns verification off", function()
    for _, v in ipairs({ "true", 1, "yes", {} }) do
      local c, err = taskapi.new { provider = "tripo", api_key = fe.KEY, base_url = base("unknown"), insecure = v }
      assert.is_nil(c)
      assert.equal("invalid_argument", err.kind)
    end
    local c = client("unknown", { insecure = false })
    local task, err = c:status(ids.unknown)
    assert.is_nil(task)
    fe.check_err(err, "transport")
  end)

  it("no environment variable turns verification off", function()
    local script = dir .. "/env.lua"
    fe.write(script, table.concat({
      "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path",
      "package.cpath = " .. string.format("%q", CPATH) .. " .. ';' .. package.cpath",
      "local taskapi = require 'taskapi'",
      "local c = assert(taskapi.new{ provider = 'tripo', api_key = 'test-key', base_url = " ..
        string.format("%q", base("unknown")) .. ", retries = 0, min_interval = 0 })",
      "local t, err = c:status(" .. string.format("%q", ids.unknown) .. ")",
      "io.write(t and 'VERIFIED-OFF' or err.kind)",
    }, "\n"))
    local envs = {
      "CURL_INSECURE=1", "CURL_SSL_NO_VERIFY=1", "TASKAPI_INSECURE=1", "TASKAPI_TLS_VERIFY=0",
      "GIT_SSL_NO_VERIFY=1", "NODE_TLS_REJECT_UNAUTHORIZED=0", "PYTHONHTTPSVERIFY=0", "SSL_NO_VERIFY=1",
      "CURL_CA_BUNDLE=" .. q(pki .. "/unknown.pem"), "SSL_CERT_FILE=" .. q(pki .. "/unknown.pem"),
      "SSL_CERT_DIR=" .. q(pki),
    }
    local p = assert(io.popen("env " .. table.concat(envs, " ") .. " " .. LUA .. " " .. q(script) .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    assert.equal("transport", out)
  end)

  it("follows an https -> https redirect", function()
    local c = client("good", { ca_file = pki .. "/ca.pem" })
    c.base_url = servers.good.url .. "/tohttps" .. fe.PATHS.tripo
    local task, err = c:status(ids.good)
    assert.is_nil(err)
    assert.equal(ids.good, task.id)
  end)

  it("refuses a redirect from https to http (nothing reaches the plain host)", function()
    local before = #fe.sh("curl -s " .. q(plain.url .. "/_fake/log"))
    local c = assert(taskapi.new { provider = "tripo", api_key = fe.KEY, ca_file = pki .. "/ca.pem",
      base_url = servers.good.url .. "/tohttp" .. fe.PATHS.tripo, retries = 2, min_interval = 0, backoff = 0.01 })
    local t0 = fe.now()
    local task, err = c:status(ids.good)
    assert.is_nil(task)
    fe.check_err(err, "transport")
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("\"http\"", 1, true), err.message)
    assert.truthy(err.message:find("redirect", 1, true), err.message)
    assert.is_true(fe.now() - t0 < 1)
    assert.equal(before, #fe.sh("curl -s " .. q(plain.url .. "/_fake/log")), "the plain host was reached")
  end)

  it("a plain-http call redirected to https is handed to libcurl, which verifies the certificate", function()
    -- the plain-HTTP path (src/lean.c) serves http:// with a numeric host; at a redirect to
    -- https it hands the transfer to libcurl: the test CA is not in the system's store
    local up = assert(require("taskapi.fake.process").start { ttl = 60,
      locations = "location = /up { return 302 " .. servers.good.url .. "/_fake/log; }" })
    local core = require "taskapi.core"
    local m = core.multi()
    local res, err = m:request { url = up.url .. "/up" }
    up.stop()
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("TLS error", 1, true), err.message)
    local st = m:stats()
    assert.equal(1, st.plain)
    assert.equal(1, st.handed)
    m:close()
  end)

  it("caps redirects: a loop is a transport error, not retryable", function()
    local c = assert(taskapi.new { provider = "tripo", api_key = fe.KEY, ca_file = pki .. "/ca.pem",
      base_url = servers.good.url .. "/loop", retries = 2, min_interval = 0, backoff = 0.01 })
    local t0 = fe.now()
    local task, err = c:status(ids.good)
    assert.is_nil(task)
    fe.check_err(err, "transport")
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("too many redirects", 1, true), err.message)
    assert.truthy(err.message:find("max 5", 1, true), err.message)
    assert.is_true(fe.now() - t0 < 1)
  end)
end)
