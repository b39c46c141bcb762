-- Creation under faults: a create is money, so it is sent again only when the server cannot
-- have acted on it. Against the nginx fake, which scripts each fault on the next create
-- (POST /_fake/faults) and counts the POSTs it received (/_fake/stats), for Tripo V3, V2 and
-- SellerPic, through the real C module: for every fault the POSTs the fake received (1 for
-- every unknown failure; more only for clean ones), what the caller got, and the ids lost
-- (tasks the fake made whose id the caller neither got nor was told might exist): always 0.
-- Writes build/<suite>/create_faults.md as it runs.
local fe = require "support.fake_env"
local cjson = require "cjson"

local SUITE = os.getenv("TASKAPI_SUITE")
if not SUITE or not SUITE:match("^[%w._-]+$") then SUITE = jit and "luajit" or "lua5.4" end
local MD_DIR = "build/" .. SUITE
local MD = MD_DIR .. "/create_faults.md"

local function curl_json(method, url, body)
  local cmd = "curl -s -X " .. method .. " "
  if body then cmd = cmd .. "-H 'Content-Type: application/json' --data-binary " .. fe.q(body) .. " " end
  return cjson.decode(fe.sh(cmd .. fe.q(url)))
end

-- fault, count, what the caller must get ("id", "indeterminate", or an error kind), POSTs
-- received, tasks the fake made (nil: whatever the fault's default makes), extra fault fields
local ROWS = {
  { "status_429", 2, "id", 3, 1, { retry_after = 0 } },
  { "status_503", 2, "id", 3, 1 },
  { "status_503", 9, "rate_limited_or_server", 4, 0 }, -- retries exhausted: clean, nothing made
  { "status_500", 1, "indeterminate", 1, 0 },
  { "status_500", 1, "indeterminate", 1, 1, { created = true } },
  { "status_502", 1, "indeterminate", 1, 0 },
  { "status_504", 1, "indeterminate", 1, 0 },
  { "status_408", 1, "indeterminate", 1, 0 },
  { "status_425", 1, "indeterminate", 1, 0 },
  { "reset", 1, "indeterminate", 1, 1 },
  { "hang", 1, "indeterminate", 1, 1, { seconds = 5 } },
  { "cut", 1, "indeterminate", 1, 1 },
  { "no_id", 1, "indeterminate", 1, 1 },
}

local PARAMS = {
  tripo = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a cat" },
  ["tripo-v2"] = { type = "text_to_model", prompt = "a cat" },
  sellerpic = { type = "instructEdit", prompt = "white background" },
}
local API = { tripo = "tripo", ["tripo-v2"] = "tripo-v2", sellerpic = "sellerpic" }

describe("create under faults (nginx fake, real HTTP)", function()
  local env
  local lines = {
    "| provider | fault | POSTs received | caller got | tasks made | ids lost |",
    "|---|---|---|---|---|---|",
  }
  setup(function() env = fe.start() end)
  after_each(function() curl_json("DELETE", env.url .. "/_fake/faults") end)
  teardown(function()
    if env then env:stop() end
    os.execute("mkdir -p " .. fe.q(MD_DIR))
    local f = io.open(MD, "wb")
    if f then
      f:write("# Creation fault matrix (", SUITE, ")\n\n", table.concat(lines, "\n"), "\n")
      f:close()
    end
  end)

  local function stats(p)
    local s = curl_json("GET", env.url .. "/_fake/stats")
    return s.creates[API[p]], s.created[API[p]]
  end

  for _, p in ipairs(fe.PROVIDERS) do
    for _, row in ipairs(ROWS) do
      local fault, count, want, posts, made, extra = row[1], row[2], row[3], row[4], row[5], row[6]
      it(p .. ": " .. fault .. " x" .. count .. (extra and extra.created and " (task made)" or ""), function()
        local c = env:client(p, { retries = 3, timeout = 2, backoff = 0.01, max_backoff = 0.02 })
        local f = { on = "create", provider = API[p], fault = fault, count = count }
        for k, v in pairs(extra or {}) do f[k] = v end
        local ok = curl_json("POST", env.url .. "/_fake/faults", cjson.encode(f))
        assert.is_true(ok.ok)
        local posts0, made0 = stats(p)
        local params = {}
        for k, v in pairs(PARAMS[p]) do params[k] = v end
        params.fake = { queue = 0, run = 0 }
        local id, err = c:create(params)
        local posts1, made1 = stats(p)
        local got
        if id then
          got = "id"
          assert.is_string(id)
        else
          fe.check_err(err)
          got = err.indeterminate and "indeterminate" or err.kind
          if err.indeterminate then
            assert.is_false(err.retryable)
            assert.matches("may have been created", err.message)
            if p == "tripo" then assert.matches("client:usage%(%)", err.message) end
          end
        end
        if want == "rate_limited_or_server" then
          assert.is_nil(id)
          assert.is_nil(err.indeterminate)
          assert.truthy(err.kind == "rate_limited" or err.kind == "server", err.kind)
        else
          assert.equal(want, got, tostring(err))
        end
        assert.equal(posts, posts1 - posts0, "POSTs received")
        local n_made = made1 - made0
        if made then assert.equal(made, n_made, "tasks made") end
        local lost = n_made - (id and 1 or 0)
        if err and err.indeterminate then lost = 0 end -- the caller was told it may exist
        assert.equal(0, lost, "ids lost")
        lines[#lines + 1] = string.format("| %s | %s x%d%s | %d | %s | %d | %d |", p, fault, count,
          extra and extra.created and " (task made)" or "", posts1 - posts0, got, n_made, lost)
      end)
    end

    it(p .. ": a refused connection is clean: retried, no POST can have arrived", function()
      local c = env:client(p, { retries = 2, base_url = "http://127.0.0.1:9" .. fe.PATHS[p] })
      local params = {}
      for k, v in pairs(PARAMS[p]) do params[k] = v end
      local t0 = fe.now()
      local id, err = c:create(params)
      assert.is_nil(id)
      fe.check_err(err, "transport")
      assert.is_false(err.sent)
      assert.is_nil(err.indeterminate)
      assert.is_true(err.retryable)
      assert.is_true(fe.now() - t0 >= 0.01) -- it backed off between its tries
      lines[#lines + 1] = string.format("| %s | connection refused | 0 | %s (retried) | 0 | 0 |", p, err.kind)
    end)

    it(p .. ": each create goes over a connection of its own; status calls share one", function()
      local c = env:client(p, { retries = 0 })
      local mark = env:mark()
      local params = {}
      for k, v in pairs(PARAMS[p]) do params[k] = v end
      params.fake = { queue = 0, run = 0 }
      local a = assert(c:create(params))
      local b = assert(c:create(params))
      assert(c:status(a))
      assert(c:status(b))
      local log = env:log(mark)
      assert.equal(4, #log)
      local conn = {}
      for i, e in ipairs(log) do conn[i] = e.connection end
      assert.is_number(conn[1])
      assert.are_not.equal(conn[1], conn[2])
      assert.are_not.equal(conn[2], conn[3]) -- the create's connection was closed after it
      assert.equal(conn[3], conn[4])
    end)
  end

  it("uploads are not billed: a reset or a 500 on an upload is sent again, and succeeds", function()
    local dir = fe.tmpdir()
    local png = dir .. "/a.png"
    fe.write(png, "\137PNG\r\n\26\n" .. string.rep("x", 100))
    for _, p in ipairs(fe.PROVIDERS) do
      for _, fault in ipairs { "reset", "status_500" } do
        curl_json("POST", env.url .. "/_fake/faults", cjson.encode { on = "upload", provider = API[p], fault = fault })
        local c = env:client(p, { retries = 2 })
        local mark = env:mark()
        local ref, err = c:upload(png)
        assert.is_nil(err)
        assert.is_string(ref)
        local log = env:log(mark)
        assert.equal(2, #log, p .. " " .. fault)
        assert.equal(fault, log[1].fault)
      end
    end
    fe.rmdir(dir)
  end)

  -- An upload whose answer never comes (the fake holds it 30 s) ends after the client's
  -- stall_time (1 s), not its total timeout (20 s): every request a client builds carries it.
  -- libcurl judges the speed over its last 5 s, so the stall shows between 1 and 1 + 5 s
  -- after the last byte. The three providers' uploads run at once (taskapi.run).
  it("an upload that stalls ends after the client's stall_time, not its timeout", function()
    local dir = fe.tmpdir()
    local png = dir .. "/a.png"
    fe.write(png, "\137PNG\r\n\26\n" .. string.rep("x", 100))
    for _, p in ipairs(fe.PROVIDERS) do
      curl_json("POST", env.url .. "/_fake/faults", cjson.encode { on = "upload", provider = API[p], fault = "hang", seconds = 30 })
    end
    local got = {}
    require("taskapi").run(function()
      for _, p in ipairs(fe.PROVIDERS) do
        require("taskapi").spawn(function()
          local c = env:client(p, { retries = 0, timeout = 20, stall_time = 1 })
          local t0 = fe.now()
          local ref, err = c:upload(png)
          got[p] = { ref, err, fe.now() - t0 }
        end)
      end
    end)
    for _, p in ipairs(fe.PROVIDERS) do
      local ref, err, took = got[p][1], got[p][2], got[p][3]
      assert.is_nil(ref, p)
      fe.check_err(err, "timeout")
      assert.matches("stalled: less than 1 bytes/s for 1 s", err.message, 1, true)
      assert.is_true(took >= 0.9 and took < 12, p .. ": the stalled upload took " .. took .. " s")
    end
    fe.rmdir(dir)
  end)

  it("the fake refuses an unknown fault by name", function()
    local r = curl_json("POST", env.url .. "/_fake/faults", '{"on":"create","fault":"explode"}')
    assert.matches("unknown request fault 'explode' %(known: cut, hang, no_id, reset, status_408", r.error)
  end)
end)
