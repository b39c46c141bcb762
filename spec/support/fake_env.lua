-- spec/support/fake_env.lua: what the integration specs share. One nginx-hosted fake provider
-- per spec file, clients of both providers pointed at it, scripted tasks, the fake's request
-- log, temporary folders and file checks. Control requests go through curl, not through the
-- library under test.
--
--   local fe = require "support.fake_env"
--   local env = fe.start()                     -- in setup(); env:stop() in teardown()
--   local c = env:client("tripo", {retries = 0})
--   local id = env:add{provider = "tripo", queue = 0, run = 0}
--   local mark = env:mark(); ...; local reqs = env:log(mark)
local cjson = require "cjson"
local server = require "taskapi.fake.server"
local model = require "taskapi.fake.model"

local M = {}

M.KEY = "test-key"           -- the key every client of the specs uses; no error may show it
M.PROVIDERS = { "tripo", "tripo-v2", "sellerpic" } -- tripo: Tripo's V3 API; tripo-v2: the seed's V2
-- Under valgrind (make memcheck) Tripo V2 is left out: it takes the C module through exactly the
-- paths V3 does (only the Lua definition differs), and valgrind is the slowest suite.
if os.getenv("TASKAPI_MEMCHECK") then M.PROVIDERS = { "tripo", "sellerpic" } end
-- The fake's provider of a client's provider: one fake Tripo task answers both APIs.
local MODEL_PROVIDER = { ["tripo-v2"] = "tripo" }
M.MODEL_PROVIDER = MODEL_PROVIDER
--- Is p one of the Tripo providers (V3 or V2)?
function M.is_tripo(p) return p == "tripo" or p == "tripo-v2" end
--- The path prefix of each provider's API on the fake.
M.PATHS = { tripo = "/tripo/v3", ["tripo-v2"] = "/tripo/v2/openapi", sellerpic = "/sellerpic" }
M.FAST = os.getenv("TASKAPI_MEMCHECK") == nil  -- under valgrind everything is much slower

local files = require "taskapi.util.files"
local q = files.quote
M.q = q

local sh = files.sh
M.sh = sh

-- curl: status, body
local function curl(method, url, body)
  local cmd = "curl -s -X " .. method .. " -w '\\n%{http_code}' "
  if body then cmd = cmd .. "-H 'Content-Type: application/json' --data-binary " .. q(body) .. " " end
  local out = sh(cmd .. q(url))
  local text, code = out:match("^(.*)\n(%d+)$")
  return tonumber(code), text
end

--- s escaped for a URL's query (every byte but letters, digits and "-._" as %XX).
function M.escape(s)
  return (s:gsub("[^%w%-%._]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

local Env = {}
Env.__index = Env

--- Starts the fake (one per spec file); opts: ttl, locations (extra nginx config, see server.start).
function M.start(opts)
  local s = assert(server.start { ttl = (opts and opts.ttl) or 300, locations = opts and opts.locations })
  local env = setmetatable({ server = s, url = s.url, clients = {} }, Env)
  env.base = {}
  for p, path in pairs(M.PATHS) do env.base[p] = s.url .. path end
  return env
end

function Env:stop()
  for _, c in ipairs(self.clients) do c:close() end
  if self.server then self.server.stop() end
  self.server = nil
end

--- A client of provider against the fake with fast retries; overrides replace any option.
function Env:client(provider, overrides)
  local opts = {
    provider = provider, api_key = M.KEY, base_url = self.base[provider],
    min_interval = 0, backoff = 0.01, max_backoff = 0.05,
  }
  for k, v in pairs(overrides or {}) do opts[k] = v end
  local taskapi = require "taskapi"
  local c = assert(taskapi.new(opts))
  self.clients[#self.clients + 1] = c
  return c
end

--- Adds a scripted task (POST /_fake/tasks); returns its id (a string). spec.provider may be a
--- client's provider name ("tripo-v2" adds a Tripo task).
function Env:add(spec)
  if MODEL_PROVIDER[spec.provider] then
    local copy = {}
    for k, v in pairs(spec) do copy[k] = v end
    copy.provider = MODEL_PROVIDER[spec.provider]
    spec = copy
  end
  local code, body = curl("POST", self.url .. "/_fake/tasks", cjson.encode(spec))
  assert(code == 200, "fake refused the task spec: " .. tostring(code) .. " " .. tostring(body))
  local id = cjson.decode(body).id
  assert(type(id) == "string", "the fake answered no id")
  return id
end

--- A function adding tasks of provider p that finish at once unless the spec says otherwise;
--- extra: more defaults (e.g. file_size).
function Env:adder(p, extra)
  return function(spec)
    spec.provider = p
    if spec.queue == nil then spec.queue = 0 end
    if spec.run == nil then spec.run = 0 end
    for k, v in pairs(extra or {}) do
      if spec[k] == nil then spec[k] = v end
    end
    return self:add(spec)
  end
end

--- The fake's own record of a task (GET /_fake/tasks/{id}), or nil when it has none.
function Env:task_info(id)
  local code, body = curl("GET", self.url .. "/_fake/tasks/" .. tostring(id))
  if code ~= 200 then return nil end
  return cjson.decode(body)
end

--- Every request the fake recorded, or those after a mark.
function Env:log(mark)
  local code, body = curl("GET", self.url .. "/_fake/log")
  assert(code == 200, "no log from the fake")
  local all = cjson.decode(body)
  local out = {}
  for i = (mark or 0) + 1, #all do out[#out + 1] = all[i] end
  return out
end

--- The current length of the log: pass it to log() to see only what came after.
function Env:mark()
  local code, body = curl("GET", self.url .. "/_fake/log")
  assert(code == 200, "no log from the fake")
  return #cjson.decode(body)
end

--- Requests of a log whose path contains `part` (plain text).
function M.matching(log, part)
  local out = {}
  for _, e in ipairs(log) do
    if e.path:find(part, 1, true) then out[#out + 1] = e end
  end
  return out
end

--- The API requests about one task: Tripo's GET .../tasks/{id} (V3) or .../task/{id} (V2),
--- SellerPic's GET /generate?id=.
function M.status_requests(log, id)
  local out = {}
  for _, e in ipairs(log) do
    if e.method == "GET" and (e.path:match("/tasks?/([^/]+)$") == id or
        (e.path:match("/v1/api/generate$") and e.query and e.query.id == id)) then
      out[#out + 1] = e
    end
  end
  return out
end

--- File host requests (/files/...).
function M.file_requests(log)
  local out = {}
  for _, e in ipairs(log) do
    if e.path:sub(1, 7) == "/files/" then out[#out + 1] = e end
  end
  return out
end

--- The bytes the fake serves for the file `key` of task id (seeded as the model seeds them).
function M.expected_bytes(id, key, size)
  return model.file_bytes("taskapi-fake " .. id .. " " .. key, size, 0, size)
end

----------------------------------------------------------------------------------------------
-- files

M.tmpdir = function() return files.tmpdir("taskapi-int-spec") end
M.rmdir, M.read, M.write, M.exists = files.rmdir, files.read, files.write, files.exists

--- Every entry of a folder, hidden ones included, sorted.
function M.ls(dir)
  local out = {}
  for name in sh("ls -A " .. q(dir) .. " 2>/dev/null"):gmatch("[^\n]+") do out[#out + 1] = name end
  table.sort(out)
  return out
end

--- Every file under a folder (recursive), paths relative to it, sorted.
function M.find(dir)
  local out = {}
  for p in sh("cd " .. q(dir) .. " && find . -mindepth 1 -type f"):gmatch("[^\n]+") do
    out[#out + 1] = p:gsub("^%./", "")
  end
  table.sort(out)
  return out
end

function M.sha256(path)
  local out = sh("sha256sum " .. q(path) .. " 2>/dev/null")
  return out:match("^(%x+)")
end

function M.sha256_string(s)
  local d = M.tmpdir()
  M.write(d .. "/x", s)
  local h = M.sha256(d .. "/x")
  M.rmdir(d)
  return h
end

----------------------------------------------------------------------------------------------
-- errors

--- Asserts what every error of the library owes its reader: a kind, a message, one line,
--- never the API key (in its text or any string field). Returns err.
function M.check_err(err, kind)
  assert(type(err) == "table", "expected an error table, got " .. type(err))
  if kind then
    assert(err.kind == kind, "expected kind " .. kind .. ", got " .. tostring(err.kind) .. ": " .. tostring(err))
  end
  assert(type(err.message) == "string" and err.message ~= "", "error without a message")
  local s = tostring(err)
  assert(s:match("^taskapi "), "tostring(err) does not start with 'taskapi ': " .. s)
  assert(not s:find("[\r\n]"), "tostring(err) spans lines: " .. s)
  assert(not s:find(M.KEY, 1, true), "tostring(err) shows the API key: " .. s)
  for k, v in pairs(err) do
    if type(v) == "string" then
      assert(not v:find(M.KEY, 1, true), "err." .. tostring(k) .. " shows the API key")
    end
  end
  return err
end

--- Asserts that no file under dir holds the API key.
function M.check_no_key_in(dir)
  for _, rel in ipairs(M.find(dir)) do
    local s = M.read(dir .. "/" .. rel) or ""
    assert(not s:find(M.KEY, 1, true), "file " .. rel .. " holds the API key")
  end
end

--- A monotonic clock (seconds).
function M.now()
  return require("taskapi.core").now()
end

--- Is v an integer (a Lua 5.4 integer subtype; a whole number on LuaJIT)?
function M.is_integer(v)
  if type(v) ~= "number" then return false end
  if math.type then return math.type(v) == "integer" end
  return v % 1 == 0
end

return M
