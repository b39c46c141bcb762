-- Bad input at the API surface: every public call given wrong types, missing options, empty
-- strings, huge strings (1 MB), negative, NaN and infinite numbers. Each must answer
-- `nil, err` with kind "invalid_argument" (or the documented kind: "io" for a download folder
-- that does not exist), never raise, never crash, and send NO request (the in-process fake's
-- log stays as it was). One table of cases, one loop.
local taskapi = require "taskapi"
local fake = require "taskapi.fake"

local KEY = "test-key"
local HUGE = string.rep("a", 1024 * 1024)
local HUGE_DIGITS = string.rep("7", 1024 * 1024)
local NAN, INF = 0 / 0, math.huge
local FN = function() end

-- Values wrong for any option that wants a number; for one that wants a string; a boolean.
local NOT_NUMBERS = { "1", "", HUGE, true, {}, FN }
local BAD_NUMBERS = { -1, NAN, INF, -INF }
local NOT_STRINGS = { 1, NAN, true, {}, FN }
local NOT_BOOLEANS = { "true", "", 1, 0, {}, FN }

local show
function show(v)
  if type(v) == "string" then
    if #v > 40 then return "a " .. #v .. "-byte string" end
    return string.format("%q", v)
  end
  if v ~= v then return "NaN" end
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = (type(k) == "number" and "" or tostring(k) .. " = ") .. show(x) end
    table.sort(parts)
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  if type(v) == "function" then return "function" end
  return tostring(v)
end

local function cat(...)
  local out = {}
  for _, list in ipairs({ ... }) do for _, v in ipairs(list) do out[#out + 1] = v end end
  return out
end

local CASES = {}
-- names: the option the error must name ('name' in quotes), when the case is about one
local function case(name, providers, kind, fn, raises, names)
  CASES[#CASES + 1] = { name = name, providers = providers, kind = kind or "invalid_argument", fn = fn, raises = raises,
    names = names }
end
local BOTH = { "tripo", "sellerpic" }

-- taskapi.new: the options table itself, then every option wrong in every way -------------------
for _, v in ipairs({ "tripo", "", HUGE, 1, NAN, true, FN }) do
  case("taskapi.new(" .. show(v) .. ")", { "tripo" }, nil, function() return taskapi.new(v) end)
end
case("taskapi.new() (nothing)", { "tripo" }, nil, function() return taskapi.new() end)

local NEW_BAD = {
  provider = cat({ "nope", "", HUGE, "tripo3", "tripo v2", { name = "x" } }, NOT_STRINGS, { false }),
  api_key = cat({ "", HUGE, "has space", "new\nline", "tab\there", "nul\0byte" }, NOT_STRINGS, { false }),
  base_url = cat({ "", "api.tripo3d.ai", "ftp://x", "http://", "https://h?q=1", "https://h/#f", "https://h p",
    "javascript:alert(1)", "https://" .. HUGE }, NOT_STRINGS),
  timeout = cat(NOT_NUMBERS, BAD_NUMBERS, { 0, 86401 }),
  retries = cat(NOT_NUMBERS, BAD_NUMBERS, { 1.5, 21 }),
  backoff = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  max_backoff = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  max_retry_after = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  min_interval = cat(NOT_NUMBERS, BAD_NUMBERS),
  stall_time = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  max_body = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  ca_file = cat({ "", "/nonexistent/ca.pem", "/tmp", HUGE, "nul\0byte" }, NOT_STRINGS),
  insecure = NOT_BOOLEANS,
  transport = { "x", 1, true, {}, { request = 1 }, FN },
  user_agent = cat({ "a\nb", "a\rb", "a\0b", HUGE }, NOT_STRINGS),
}
local NEW_NAMES = {}
for k in pairs(NEW_BAD) do NEW_NAMES[#NEW_NAMES + 1] = k end
table.sort(NEW_NAMES)
for _, opt in ipairs(NEW_NAMES) do
  for _, v in ipairs(NEW_BAD[opt]) do
    case("taskapi.new{" .. opt .. " = " .. show(v) .. "}", BOTH, nil, function(_, f, p)
      local o = { provider = p, api_key = KEY, base_url = f:base_url(p), transport = f:transport() }
      o[opt] = v
      return taskapi.new(o)
    end, nil, opt ~= "provider" and opt ~= "transport" and opt or nil)
  end
end
for _, missing in ipairs({ "provider", "api_key" }) do
  case("taskapi.new without " .. missing, BOTH, nil, function(_, f, p)
    local o = { provider = p, api_key = KEY, base_url = f:base_url(p), transport = f:transport() }
    o[missing] = nil
    return taskapi.new(o)
  end)
end
for _, k in ipairs({ "bogus", "apiKey", "timeout_s", 1, HUGE }) do
  case("taskapi.new with unknown option " .. show(k), BOTH, nil, function(_, f, p)
    return taskapi.new { provider = p, api_key = KEY, transport = f:transport(), [k] = 1 }
  end, nil, (type(k) == "string" and #k < 40) and k or nil)
end

-- task ids: wrong for every call that takes one ---------------------------------------------------
local BAD_IDS = {
  tripo = cat({ "", HUGE, "a/b", "..", "a b", "a\0b", "a?b", "a#b", "%2e%2e", "a\nb" }, NOT_STRINGS, { nil }),
  sellerpic = cat({ "", HUGE_DIGITS, "12a", "-1", "1e5", "0x10", " 1", "1.5", "a/b", "123456789012345678901" },
    { -1, 1.5, NAN, INF, -INF, 2 ^ 60, true, {}, FN }, { nil }),
}
local ID_CALLS = {
  status = function(c, id) return c:status(id) end,
  wait = function(c, id) return c:wait(id, { timeout = 1 }) end,
  download = function(c, id) return c:download(id, { dir = "." }) end,
  wait_all = function(c, id) return c:wait_all({ id }, { timeout = 1 }) end,
  each_completed = function(c, id)
    local it = c:each_completed({ id }, { timeout = 1 })
    local t, err = it()
    assert(it() == nil, "each_completed went on after a bad id")
    return t and t.ok and t or nil, err
  end,
}
for _, p in ipairs(BOTH) do
  for _, call in ipairs({ "status", "wait", "download", "wait_all", "each_completed" }) do
    for i = 1, #BAD_IDS[p] + ((call == "wait_all" or call == "each_completed") and 0 or 1) do -- + 1: a nil id
      local id = BAD_IDS[p][i]
      case("client:" .. call .. "(" .. show(id) .. ")", { p }, nil, function(c) return ID_CALLS[call](c, id) end)
    end
  end
end
for _, ids in ipairs({ "x", 1, true, FN }) do
  case("client:wait_all(" .. show(ids) .. ")", BOTH, nil, function(c) return c:wait_all(ids) end)
  case("client:each_completed(" .. show(ids) .. ")", BOTH, nil, function(c)
    local _, err = c:each_completed(ids)()
    return nil, err
  end)
end
case("client:wait_all with one bad id among good ones", { "tripo" }, nil, function(c)
  return c:wait_all({ "good-1", "good-2", "bad id" })
end)

-- wait options (wait, wait_all, each_completed share them) ----------------------------------------
local WAIT_BAD = {
  timeout = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  interval = cat(NOT_NUMBERS, BAD_NUMBERS),
  max_interval = cat(NOT_NUMBERS, BAD_NUMBERS),
  min_interval = cat(NOT_NUMBERS, BAD_NUMBERS),
  on_progress = { "f", 1, true, {} },
}
local WAIT_CALLS = {
  wait = function(c, id, o) return c:wait(id, o) end,
  wait_all = function(c, id, o) return c:wait_all({ id }, o) end,
  each_completed = function(c, id, o)
    local _, err = c:each_completed({ id }, o)()
    return nil, err
  end,
}
local GOOD_ID = { tripo = "0fa7f5f2-aaaa-4bbb-8ccc-000000000001", sellerpic = "1234567890123456789" }
for _, call in ipairs({ "wait", "wait_all", "each_completed" }) do
  for _, o in ipairs({ "x", HUGE, 1, true, FN }) do
    case("client:" .. call .. "(id, " .. show(o) .. ")", BOTH, nil, function(c, _, p) return WAIT_CALLS[call](c, GOOD_ID[p], o) end)
  end
  for _, opt in ipairs({ "interval", "max_interval", "min_interval", "on_progress", "timeout" }) do
    for _, v in ipairs(WAIT_BAD[opt]) do
      case("client:" .. call .. "(id, {" .. opt .. " = " .. show(v) .. "})", BOTH, nil, function(c, _, p)
        return WAIT_CALLS[call](c, GOOD_ID[p], { [opt] = v })
      end, nil, opt)
    end
  end
end

-- download options and task tables ------------------------------------------------------------------
local DL_BAD = {
  dir = cat({ "", "a\0b", HUGE }, NOT_STRINGS),
  outputs = { {}, "", 1.5, true, { true }, { {} }, { "" }, { 1.5 }, { NAN }, { HUGE }, FN },
  format = cat({ "bmp", "", HUGE, "PNG" }, NOT_STRINGS),
  overwrite = NOT_BOOLEANS,
  max_bytes = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  on_progress = { "f", 1, true, {} },
  timeout = cat(NOT_NUMBERS, BAD_NUMBERS, { 0 }),
  uhd = NOT_BOOLEANS,
  min_speed = cat(NOT_NUMBERS, BAD_NUMBERS),      -- files branch: 0 turns the floor off
  min_speed_time = cat(NOT_NUMBERS, BAD_NUMBERS),
}
for _, o in ipairs({ "x", HUGE, 1, true, FN }) do
  case("client:download(id, " .. show(o) .. ")", BOTH, nil, function(c, _, p) return c:download(GOOD_ID[p], o) end)
end
for _, opt in ipairs({ "dir", "format", "max_bytes", "on_progress", "outputs", "overwrite", "timeout", "uhd",
  "min_speed", "min_speed_time" }) do
  for _, v in ipairs(DL_BAD[opt]) do
    case("client:download(id, {" .. opt .. " = " .. show(v) .. "})", BOTH, nil, function(c, _, p)
      return c:download(GOOD_ID[p], { dir = ".", [opt] = v })
    end, nil, opt)
  end
end
-- a misspelt option is refused, not ignored (a download would go on without it)
for _, k in ipairs({ "overwirte", "directory", "timeout_s" }) do
  case("client:download(id, {" .. k .. " = true}) (unknown)", BOTH, nil, function(c, _, p)
    return c:download(GOOD_ID[p], { dir = ".", [k] = true })
  end, nil, k)
  case("client:wait(id, {" .. k .. " = true}) (unknown)", BOTH, nil, function(c, _, p)
    return c:wait(GOOD_ID[p], { [k] = true })
  end, nil, k)
end
case("client:download(id, {dir = a folder that cannot be made}) is an io error", BOTH, "io", function(c, _, p)
  return c:download(GOOD_ID[p], { dir = "/etc/hostname/taskapi-bad-input" })
end)
case("client:download(id, {dir = a file})", BOTH, "io", function(c, _, p)
  return c:download(GOOD_ID[p], { dir = "/etc/hostname" })
end)
for _, task in ipairs({
  {}, { id = 1 }, { id = "x", outputs = "none" }, { id = "x", provider = "other", outputs = {} },
  { id = "x", provider = "tripo", outputs = {}, done = false },
  { id = "x", provider = "tripo", outputs = {}, done = true, ok = false },
}) do
  case("client:download(task table " .. show(task.id) .. "/" .. show(task.done) .. ")", { "tripo" },
    task.done and "task_failed" or "invalid_argument", function(c) return c:download(task, { dir = "." }) end)
end

-- create ------------------------------------------------------------------------------------------
local cyclic = { type = "text_to_model" }
cyclic.self = cyclic
for _, params in ipairs({
  "text_to_model", HUGE, 1, true, FN, {}, { type = "" }, { type = 1 }, { type = true }, { type = "a/b" },
  { type = "../x" }, { type = "a b" }, { type = HUGE }, { type = "text_to_model", prompt = FN },
  { type = "text_to_model", x = NAN }, { type = "text_to_model", x = INF }, cyclic,
  { type = "text_to_model", [true] = 1 },
}) do
  case("client:create(" .. (type(params) == "table" and "{type = " .. show(params.type) .. ", ...}" or show(params)) .. ")",
    BOTH, nil, function(c) return c:create(params) end)
end
case("client:create() (nothing)", BOTH, nil, function(c) return c:create() end)

-- upload ------------------------------------------------------------------------------------------
for _, a in ipairs({ "", "/nonexistent/x.png", "/tmp", "/etc/hostname", "nul\0byte.png", HUGE, 1, true, FN, {},
  { path = "" }, { path = 1 }, { bogus = 1 }, { path = "/etc/hostname", type = "exe" } }) do
  case("client:upload(" .. (type(a) == "table" and "{path = " .. show(a.path) .. "}" or show(a)) .. ")",
    BOTH, nil, function(c) return c:upload(a) end)
end

-- taskapi.spawn / sleep / gather / run ------------------------------------------------------------
for _, v in ipairs({ nil, "x", 1, {} }) do
  case("taskapi.spawn(" .. show(v) .. ") inside run", { "tripo" }, nil, function()
    return taskapi.run(function() return taskapi.spawn(v) end)
  end)
end
case("taskapi.spawn(fn) outside run", { "tripo" }, nil, function() return taskapi.spawn(FN) end)
for _, v in ipairs({ -1, NAN, INF, -INF, "1", "", HUGE, true, {}, FN }) do
  case("taskapi.sleep(" .. show(v) .. ")", { "tripo" }, nil, function() return taskapi.sleep(v) end)
  case("taskapi.sleep(" .. show(v) .. ") inside run", { "tripo" }, nil, function()
    return taskapi.run(function() return taskapi.sleep(v) end)
  end)
end
case("taskapi.sleep()", { "tripo" }, nil, function() return taskapi.sleep() end)
for _, v in ipairs({ "x", HUGE, 1, true, FN, { 1 }, { FN, "x" }, { FN, {} } }) do
  case("taskapi.gather(" .. show(v) .. ")", { "tripo" }, nil, function() return taskapi.gather(v) end)
end
case("taskapi.gather()", { "tripo" }, nil, function() return taskapi.gather() end)
-- taskapi.run returns fn's own results, so it cannot answer nil, err: it raises (documented)
for _, v in ipairs({ "x", 1, true, {} }) do
  case("taskapi.run(" .. show(v) .. ") raises", { "tripo" }, nil, function() return taskapi.run(v) end, true)
end
case("taskapi.run() raises", { "tripo" }, nil, function() return taskapi.run() end, true)

----------------------------------------------------------------------------------------------------

describe("bad input at the API surface", function()
  local f = fake.new()
  local clients = {}
  for _, p in ipairs(BOTH) do
    clients[p] = assert(taskapi.new { provider = p, api_key = KEY, base_url = f:base_url(p), transport = f:transport(),
      min_interval = 0, retries = 0 })
  end

  it("has a case for every public call (" .. #CASES .. " cases)", function()
    local seen = {}
    for _, c in ipairs(CASES) do
      local call = c.name:match("^client:([%w_]+)") or c.name:match("^taskapi%.(%w+)")
      seen[call] = true
    end
    for _, name in ipairs({ "new", "status", "wait", "download", "create", "wait_all", "each_completed", "upload",
      "run", "spawn", "sleep", "gather" }) do
      assert.is_true(seen[name], "no case for " .. name)
    end
    assert.is_true(#CASES > 400)
  end)

  for _, c in ipairs(CASES) do
    for _, p in ipairs(c.providers) do
      it(p .. ": " .. c.name, function()
        local before = #f.log
        local res = table.pack and table.pack(pcall(c.fn, clients[p], f, p)) or { pcall(c.fn, clients[p], f, p) }
        if c.raises then
          assert.is_false(res[1], "expected an error to be raised")
          assert.truthy(tostring(res[2]):find("expects a function", 1, true), tostring(res[2]))
        else
          assert.is_true(res[1], "raised: " .. tostring(res[2]))
          assert.is_nil(res[2], "expected nil, err; got a value")
          local err = res[3]
          assert.equal("table", type(err), "expected an error table")
          assert.equal(c.kind, err.kind, tostring(err))
          local s = tostring(err)
          assert.truthy(s:find("^taskapi " .. c.kind .. ": "), s)
          assert.is_false(s:find("[\r\n]") ~= nil, "error spans lines: " .. s:sub(1, 200))
          assert.is_true(#s < 2000, "error message of " .. #s .. " bytes")
          assert.is_nil(s:find(KEY, 1, true), "the key is in the error")
          if c.names then assert.truthy(s:find("'" .. c.names .. "'", 1, true), "the error does not name '" .. c.names .. "': " .. s) end
        end
        assert.equal(before, #f.log, "a request was sent")
      end)
    end
  end
end)
