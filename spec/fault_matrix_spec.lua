-- The fault matrix: one row per fault the network or a provider can produce, run against the
-- nginx fake for both providers through the real C module. Each row asserts the exact outcome
-- (the right result, or the documented error) and that nothing is lost: the destination holds
-- only complete files (no .part, no partial file under any name), no error, file or file-host
-- request carries the API key. The rows are data; one loop runs them. The table is written to
-- build/<suite>/fault_matrix.md as the spec runs: <suite> is $TASKAPI_SUITE (spec/run-all.sh,
-- asan.sh and memcheck.sh set it: lua5.4, luajit, asan, memcheck) or the runtime's name, so
-- suites running at once never write one file.
local fe = require "support.fake_env"

local KEY = fe.KEY
local SIZE = 300000
local SUITE = os.getenv("TASKAPI_SUITE")
if not SUITE or not SUITE:match("^[%w._-]+$") then SUITE = jit and "luajit" or "lua5.4" end
local MD_DIR = "build/" .. SUITE
local MD = MD_DIR .. "/fault_matrix.md"

-- Extra locations of the fake's nginx for faults the model does not script: a connection cut
-- in the middle of a JSON body, a body nested 10,000 deep, a redirect loop. Each answers any
-- path under it, so both providers' status paths reach it.
local LOCATIONS = [[
    location /x-reset/ {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Content-Length"] = 4000
        ngx.print('{"code":0,"data":{"task_id":"x","status":"running","progress":42,"output":{"model":"http://')
        ngx.flush(true)
        return ngx.exit(ngx.ERROR)
      }
    }
    location /x-nested/ {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"code":0,"data":' .. string.rep("[", 10000) .. string.rep("]", 10000) .. '}')
      }
    }
    location /x-loop/ { return 302 /x-loop/again; }
]]

local PATHS = fe.PATHS
local ANY_ID = { tripo = "0fa7f5f2-aaaa-4bbb-8ccc-00000000fa17", ["tripo-v2"] = "0fa7f5f2-aaaa-4bbb-8ccc-00000000fa17",
  sellerpic = "1869254700000000042" }

-- mount helpers (as root): a tiny tmpfs (full disk), the same remounted read-only
local function mount_tmpfs(dir, opts)
  return os.execute("mount -t tmpfs -o " .. opts .. " tmpfs " .. fe.q(dir) .. " 2>/dev/null") == true or
    os.execute("mount -t tmpfs -o " .. opts .. " tmpfs " .. fe.q(dir) .. " 2>/dev/null") == 0
end
local CAN_MOUNT = (function()
  local d = fe.tmpdir()
  local ok = mount_tmpfs(d, "size=64k")
  if ok then os.execute("umount " .. fe.q(d)) end
  fe.rmdir(d)
  return ok
end)()

-- One row per fault. fields:
--   fault     the row's name in the table
--   task      the scripted task's spec (faults), for rows on the model
--   base      a location prefix of LOCATIONS instead of the model (the task is not needed)
--   client    client option overrides
--   op        "status" or "download" (download: the finished task is read by a clean client)
--   dest      "full" (a 64 KiB tmpfs) or "ro" (a read-only tmpfs) instead of a plain folder
--   expect    "ok" or the error kind
--   retryable, status, message: what the error must carry
--   check     function(ctx) for the row's own facts (requests, timing, contents)
local ROWS = {
  { fault = "5xx burst (3 x 500, then fine)", task = { server_errors = 3 }, client = { retries = 3 }, op = "status",
    expect = "ok", check = function(x) assert.equal(4, #fe.status_requests(x.log, x.id)) end },
  { fault = "5xx burst longer than the retries", task = { server_errors = 5 }, client = { retries = 2 }, op = "status",
    expect = "server", status = 500, retryable = true,
    check = function(x) assert.equal(3, #fe.status_requests(x.log, x.id)) end },
  { fault = "429 with Retry-After in seconds", task = { rate_limit = { count = 1, retry_after = 1 } }, op = "status",
    expect = "ok", check = function(x) assert.is_true(x.took >= 0.9, "retried after " .. x.took) end },
  { fault = "429 with Retry-After as an HTTP date", task = { rate_limit = { count = 1, retry_after = 2, as_date = true } },
    op = "status", expect = "ok", check = function(x) assert.is_true(x.took >= 0.9, "retried after " .. x.took) end },
  { fault = "429 with Retry-After past max_retry_after", task = { rate_limit = { count = 1, retry_after = 60 } },
    client = { max_retry_after = 5 }, op = "status", expect = "rate_limited", status = 429, retryable = true,
    check = function(x) assert.equal(60, x.err.retry_after) assert.is_true(x.took < 2) end },
  { fault = "reset in the middle of a JSON body", base = "/x-reset", client = { retries = 1 }, op = "status",
    expect = "transport", retryable = true, message = "127%.0%.0%.1" },
  { fault = "stalled response (stall_time = 1)", task = { delay = 4 }, client = { stall_time = 1, retries = 0 },
    op = "status", expect = "timeout", retryable = true, message = "stalled",
    check = function(x) assert.is_true(x.took < 3, "took " .. x.took) end },
  { fault = "truncated JSON body (once)", task = { malformed_json = 1 }, op = "status", expect = "ok" },
  { fault = "truncated JSON body (always)", task = { malformed_json = 9 }, client = { retries = 1 }, op = "status",
    expect = "bad_response", message = "JSON" },
  { fault = "non-JSON body (HTML 502 page)", task = { html_error = 9 }, client = { retries = 1 }, op = "status",
    expect = "server", status = 502, retryable = true },
  { fault = "wrongly shaped body (data is a string)", task = { wrong_shape = "string" }, op = "status",
    expect = "bad_response" },
  { fault = "oversized body (max_body = 64)", task = {}, client = { max_body = 64 }, op = "status",
    expect = "bad_response", message = "large" },
  { fault = "JSON nested 10,000 deep", base = "/x-nested", op = "status", expect = "bad_response", message = "JSON" },
  { fault = "redirect loop", base = "/x-loop", client = { retries = 2 }, op = "status", expect = "transport",
    retryable = false, message = "too many redirects",
    check = function(x) assert.is_true(x.took < 2) end },
  { fault = "expired download link (renewed once)", task = { expired_links = 1 }, op = "download", expect = "ok",
    sellerpic_task = { expired_links = 2 } },
  { fault = "download cut at 50 % (resumed)", task = { drop_download = 0.5 }, op = "download", expect = "ok",
    check = function(x)
      local gets = fe.file_requests(x.log)
      assert.equal(2, #gets)
      assert.truthy((gets[2].headers.range or ""):match("^bytes=%d+%-$"), "no Range on the second request")
    end },
  { fault = "server ignores Range after a cut", task = { drop_download = 0.5, ignore_range = true }, op = "download",
    expect = "ok", check = function(x) assert.is_true(#fe.file_requests(x.log) >= 2) end },
  { fault = "stalled download (resumed)", task = { stall = 3, stall_count = 1 }, client = { stall_time = 1 },
    op = "download", expect = "ok" },
  { fault = "Content-Length that lies", task = { lie_length = true }, op = "download", expect = "download",
    message = "range not satisfiable" },
  { fault = "full disk (64 KiB tmpfs)", task = {}, op = "download", dest = "full", expect = "io",
    message = "No space left" },
  { fault = "read-only destination", task = {}, op = "download", dest = "ro", expect = "io", message = "Read%-only" },
  { fault = "server file name with ../", task = { filename = "../../evil.sh" }, op = "download", expect = "ok",
    check = function(x)
      assert.is_false(fe.exists(x.dir .. "/../evil.sh"))
      assert.is_false(fe.exists("/tmp/evil.sh"))
      for _, f in ipairs(x.files) do assert.equal(x.dir, f.path:match("^(.*)/[^/]+$")) end
    end },
  { fault = "wrong API key", task = {}, client = { api_key = "wrong-key-7" }, op = "status", expect = "auth",
    retryable = false, check = function(x) assert.is_nil(tostring(x.err):find("wrong-key-7", 1, true)) end },
  { fault = "another key's task", task = { owner_key = "other-key" }, op = "status", expect = "not_found",
    retryable = false },
}

local function md_escape(s) return (tostring(s):gsub("|", "\\|"):gsub("\n", " ")) end

describe("fault matrix", function()
  local env, dir, mounted
  local md_rows = {}

  setup(function()
    env = fe.start { locations = LOCATIONS }
    os.execute("mkdir -p " .. fe.q(MD_DIR))
    local f = assert(io.open(MD, "w"))
    f:write("| fault | provider | outcome | files left | keys leaked |\n|---|---|---|---|---|\n")
    f:close()
  end)
  teardown(function()
    if env then env:stop() end
  end)
  before_each(function() dir = fe.tmpdir() end)
  after_each(function()
    if mounted then os.execute("umount " .. fe.q(mounted)) mounted = nil end
    fe.rmdir(dir)
  end)

  local function emit(row, p, outcome, left, leaked)
    local line = "| " .. md_escape(row.fault) .. " | " .. p .. " | " .. md_escape(outcome) .. " | " .. left .. " | " .. leaked .. " |\n"
    md_rows[#md_rows + 1] = line
    local f = io.open(MD, "a")
    if f then f:write(line) f:close() end
  end

  for _, row in ipairs(ROWS) do
    for _, p in ipairs(fe.PROVIDERS) do
      local name = p .. ": " .. row.fault
      local skip = row.dest and not CAN_MOUNT
      if skip then
        pending(name .. " (needs root to mount a tmpfs)")
      else
        it(name, function()
          local c = env:client(p, row.client)
          local id = ANY_ID[p]
          if row.base then
            c.base_url = env.url .. row.base .. PATHS[p]
          else
            local spec = { provider = p, queue = 0, run = 0, file_size = SIZE,
              outputs = fe.is_tripo(p) and { "model" } or nil }
            for k, v in pairs((p == "sellerpic" and row.sellerpic_task) or row.task or {}) do spec[k] = v end
            id = env:add(spec)
          end
          local dest = dir
          if row.dest == "full" then
            assert.is_true(mount_tmpfs(dir, "size=64k"))
            mounted = dir
          elseif row.dest == "ro" then
            assert.is_true(mount_tmpfs(dir, "size=1m"))
            mounted = dir
            assert.is_true(os.execute("mount -o remount,ro " .. fe.q(dir)) == true or
              os.execute("mount -o remount,ro " .. fe.q(dir)) == 0)
          end
          local task
          if row.op == "download" then
            task = assert(env:client(p):status(id))
            assert.is_true(task.ok)
          end
          local mark = env:mark()
          local t0 = fe.now()
          local res, err
          if row.op == "status" then
            res, err = c:status(id)
          else
            res, err = c:download(task, { dir = dest })
          end
          local x = { id = id, res = res, err = err, took = fe.now() - t0, log = env:log(mark), dir = dest,
            files = row.op == "download" and res or {} }

          -- the exact outcome
          local outcome
          if row.expect == "ok" then
            assert.is_nil(err, err and tostring(err))
            if row.op == "status" then
              assert.equal(id, res.id)
              assert.equal("succeeded", res.state)
              outcome = "ok: task succeeded"
            else
              assert.is_true(#res >= 1)
              for _, f in ipairs(res) do
                assert.equal(SIZE, f.bytes)
                local key = p == "sellerpic" and f.name .. ".png" or f.name
                assert.equal(fe.sha256_string(fe.expected_bytes(id, key, SIZE)), fe.sha256(f.path), "content of " .. f.path)
              end
              outcome = "ok: " .. #res .. " complete file" .. (#res > 1 and "s" or "")
            end
          else
            assert.is_nil(res)
            fe.check_err(err, row.expect)
            if row.status then assert.equal(row.status, err.status) end
            if row.retryable ~= nil then assert.equal(row.retryable, err.retryable == true) end
            if row.message then assert.truthy(err.message:find(row.message), err.message) end
            outcome = "`" .. err.kind .. "`" .. (err.status and " (HTTP " .. err.status .. ")" or "") ..
              (err.retryable and ", retryable" or "") .. ": " .. err.message:gsub(" ?%(?127%.0%.0%.1:%d+%)?", "")
              :gsub("/tmp/taskapi%-int%-spec%.%w+/%S*", "<dir>/..."):sub(1, 90)
          end
          if row.check then row.check(x) end

          -- nothing lost: only complete files in the destination
          local complete = {}
          for _, f in ipairs(x.files or {}) do complete[f.path:match("[^/]+$")] = true end
          local left = 0
          for _, entry in ipairs(fe.ls(dest)) do
            if not complete[entry] and entry ~= "lost+found" then left = left + 1 end
          end
          assert.equal(0, left, "left in the destination: " .. table.concat(fe.ls(dest), ", "))
          for _, entry in ipairs(fe.ls(dest)) do assert.is_nil(entry:find("%.part$"), entry) end

          -- no key anywhere it must not be
          local leaked = 0
          if err and tostring(err):find(KEY, 1, true) then leaked = leaked + 1 end
          for _, rel in ipairs(fe.find(dest)) do
            if (fe.read(dest .. "/" .. rel) or ""):find(KEY, 1, true) then leaked = leaked + 1 end
          end
          for _, e in ipairs(fe.file_requests(x.log)) do
            if e.authorization or e.key then leaked = leaked + 1 end
          end
          assert.equal(0, leaked)
          emit(row, p, outcome, left, leaked)
        end)
      end
    end
  end

  it("wrote the table", function()
    assert.is_true(#md_rows > 0)
    local text = fe.read(MD)
    assert.truthy(text:find("| fault | provider |", 1, true))
    for _, line in ipairs(md_rows) do assert.truthy(text:find(line, 1, true)) end
  end)
end)
