-- taskapi.fake.model.faults: every fault the fake plays, in one table (FAULT_TABLE), and the
-- model's side of them: a task's faults from its spec, the status reads they answer or
-- change, and the request faults scripted by POST /_fake/faults. A new fault is one entry of
-- FAULT_TABLE: the hook it acts at and what it does there.
local B = require "taskapi.fake.model.base"
local json = require "taskapi.json"

local P = { Model = {} }
local Model = P.Model

local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local copy, is_null = B.copy, B.is_null

-- An error answer in the envelope of api (a provider file's API: api.error(self, status,
-- code, message, suggestion, headers); api.tripo for Tripo's two APIs): tripo = {code,
-- message, suggestion} for Tripo, sellerpic = {code, message} for SellerPic.
local function answer(self, api, status, tripo, sellerpic, headers)
  local a = api.tripo and tripo or sellerpic
  return api.error(self, status, a[1], a[2], a[3], headers)
end

local HTML_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" ..
  "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>fake-gateway</center>\r\n</body>\r\n</html>\r\n"

-- wrong_shape's data: "missing" (no data at all), "array", "null", "number", else a string.
local function apply_shape(shape)
  if shape == "missing" then return nil, false end
  if shape == "array" then return json.array({}), true end
  if shape == "null" then return json.null, true end
  if shape == "number" then return 42, true end
  return "unexpected", true -- true or "string"
end

-- Every fault, in one table: {name, where it is set, what it does, the field of the answer a
-- host acts on}, then how the model plays it. Where: "task" (a task spec's `faults`, or its
-- top level: played by the model on that task's reads and files) or "request" (POST
-- /_fake/faults: the next create or upload of a provider). The field: what the model puts in
-- its answer for the host to play (both hosts, fake/server.lua in nginx and
-- fake/inprocess.lua, act on it and check at load that they know every such field); none:
-- the model writes the whole answer itself.
--
-- A task fault acts at one hook (`at`), where the model calls its `play`:
--   status  a status read (or SellerPic's download-link read) is answered by the fault
--           instead: play(self, api, value, ctx) -> answer, or "malformed" (the read's own
--           answer, cut); `counted`: the value is a count (n, or {count = n, ...}) used up
--           one per read; the first due in table order answers
--   data    the data of one status read: play(value, data) -> data, present (false: the
--           envelope without data); not on lists
--   reply   the answer of a status read (each listed task's on a list): play(resp, value)
--   link    a file link being issued (`counted`): play(link, ctx)
--   file    a file answer, GET or HEAD: play(resp, value, ctx)
--   get     a file answer to a GET, its range settled: play(resp, value, t, link)
-- `options`: a number given is the count of {count = n} (the fault takes more options).
-- A request fault answers `status` in the API's envelope, or plays play(resp, f) on the
-- answer (f the scripted fault; resp the request's own answer when `created`, else a 500);
-- `lost`: the request reached the server and its answer was lost (it creates by default);
-- `clean`: it never creates.
P.FAULT_TABLE = {
  { "server_errors", "task", "the next n status reads answer 500 (code 1000)", at = "status", counted = true,
    play = function(self, api)
      return answer(self, api, 500, { 1000, "Internal server error", "Retry later" }, { 500, "Internal Server Error" })
    end },
  { "rate_limit", "task", "status reads answer 429 (code 2000) with Retry-After", at = "status", counted = true,
    options = true,
    play = function(self, api, v, ctx)
      local after = tonumber(v.retry_after) or 1
      local headers = { ["Retry-After"] = v.as_date and B.http_date(ceil(ctx.now + after)) or tostring(floor(after)) }
      return answer(self, api, 429, { tonumber(v.code) or 2000, "You have exceeded the limit of generation",
        "Try again later" }, { tonumber(v.code) or 429, "Too Many Requests" }, headers)
    end },
  { "html_error", "task", "status reads answer an HTML error page", at = "status", counted = true,
    play = function(self, api)
      local r = B.text_resp(502, HTML_502, "text/html")
      if api.tripo then r.headers["X-Tripo-Trace-ID"] = self:trace_id() end
      return r
    end },
  { "malformed_json", "task", "status reads answer a body that is not JSON", at = "status", counted = true,
    play = function() return "malformed" end },
  { "code_under_200", "task", "status reads answer an error code under HTTP 200", at = "status", counted = true,
    options = true,
    play = function(self, api, v)
      local msg = v.msg or v.message or "internal error"
      return answer(self, api, 200, { tonumber(v.code) or 1000, msg, "Retry later" }, { tonumber(v.code) or 500, msg })
    end },
  { "delay", "task", "status answers come this many seconds late", "delay", at = "reply",
    play = function(resp, v)
      local d = tonumber(v)
      if d and d > 0 and (not resp.delay or d > resp.delay) then resp.delay = d end
    end },
  { "drop_download", "task", "the first GET of each file closes after this share of it", "drop_after", at = "get",
    play = function(resp, v, t, link)
      local frac = tonumber(v)
      if frac and not t.first_get[link.key] then
        resp.drop_after = max(0, min(resp.length - 1, floor(resp.length * frac)))
        resp.plain = false
      end
    end },
  { "expired_links", "task", "file links answer 403 until the task is read again", at = "link", counted = true,
    play = function(link, ctx) link.expires = ctx.now - 1 end },
  { "ignore_range", "task", "the file host ignores Range (200 with the whole file)", at = "file",
    play = function(resp, _, ctx)
      resp.plain = false
      resp.ignored_range = ctx.headers.range ~= nil
    end },
  { "lie_length", "task", "Content-Length says 4096 bytes more than the body", "lie_length", at = "get",
    play = function(resp)
      resp.headers["Content-Length"] = tostring(resp.length + 4096)
      resp.lie_length = true
      resp.plain = false
    end },
  { "filename", "task", "files come with this Content-Disposition filename", at = "file",
    play = function(resp, v)
      resp.headers["Content-Disposition"] = 'attachment; filename="' .. tostring(v) .. '"'
      resp.plain = false
    end },
  { "stall", "task", "files stop halfway for this many seconds", "stall", at = "get",
    play = function(resp, v, t)
      local stall, count = tonumber(v), t.faults.stall_count
      if stall and stall > 0 and (count == nil or (tonumber(count) or 0) > t.stalls) then
        t.stalls = t.stalls + 1
        resp.stall = stall
        resp.stall_after = floor(resp.length / 2)
        resp.plain = false
      end
    end },
  { "stall_count", "task", "how many GETs stall (with stall)" }, -- read by stall's play
  { "wrong_shape", "task", "status data in another shape", at = "data", play = apply_shape },
  { "status_408", "request", "answers 408" }, { "status_425", "request", "answers 425" },
  { "status_429", "request", "answers 429 with Retry-After (nothing made)", clean = true },
  { "status_500", "request", "answers 500" }, { "status_502", "request", "answers 502" },
  { "status_503", "request", "answers 503 (nothing made)", clean = true }, { "status_504", "request", "answers 504" },
  { "reset", "request", "closes the connection without an answer", "reset", lost = true,
    play = function(resp) resp.reset = true end },
  { "hang", "request", "answers after `seconds` (60)", "delay", lost = true,
    play = function(resp, f) resp.delay = f.seconds end },
  { "cut", "request", "answers a truncated body", lost = true, play = B.truncate },
  { "no_id", "request", "answers without the task id or file token", lost = true,
    play = function(resp)
      local body = B.decode_json(resp.body or "")
      if type(body) == "table" and type(body.data) == "table" then
        local d = body.data
        d.task_id, d.id, d.file_token, d.image_token, d.fileKey = nil, nil, nil, nil, nil
        resp.body = json.encode(body) or resp.body
      end
    end },
}

-- The table read by name and by hook.
local BY_NAME, AT = {}, {}
P.FAULTS = {}         -- the names a task spec may carry in `faults` (or at its top level)
P.REQUEST_FAULTS = {} -- request fault name -> the HTTP status it answers, or true
for _, e in ipairs(P.FAULT_TABLE) do
  BY_NAME[e[1]] = e
  if e[2] == "task" then
    P.FAULTS[#P.FAULTS + 1] = e[1]
    if e.at then
      AT[e.at] = AT[e.at] or {}
      AT[e.at][#AT[e.at] + 1] = e
    end
  else
    e.status = tonumber(e[1]:match("^status_(%d+)$"))
    P.REQUEST_FAULTS[e[1]] = e.status or true
  end
end

--- A host's check at load: plays (field -> true) names every answer field of FAULT_TABLE,
--- else an error naming the host and the field it does not play.
function P.check_host(host, plays)
  for _, e in ipairs(P.FAULT_TABLE) do
    if e[4] and not plays[e[4]] then
      error(host .. " does not play resp." .. e[4] .. " (fault " .. e[1] .. " of taskapi.fake.model's FAULT_TABLE)", 2)
    end
  end
  return true
end

--- The faults of a task spec: spec.faults, completed by the same names at the top level;
--- null values left out, the count of an `options` fault as {count = n}.
function P.of_spec(spec)
  local faults = type(spec.faults) == "table" and copy(spec.faults) or {}
  for _, name in ipairs(P.FAULTS) do
    if faults[name] == nil and spec[name] ~= nil then faults[name] = copy(spec[name]) end
  end
  for k, v in pairs(faults) do if is_null(v) then faults[k] = nil end end
  for name, v in pairs(faults) do
    if type(v) == "number" and BY_NAME[name] and BY_NAME[name].options then faults[name] = { count = v } end
  end
  return faults
end

--- The faults task t has that act at hook `at`, in table order: for entry, value in each(at, t).
local function none() return nil end
function P.each(at, t)
  if next(t.faults) == nil then return none end -- most tasks: no fault at all
  local list, i = AT[at] or {}, 0
  return function()
    while true do
      i = i + 1
      local e = list[i]
      if not e then return nil end
      local v = t.faults[e[1]]
      if v then return e, v end
    end
  end
end

--- The first counted fault of task t at hook `at` that is due (its count is used down by
--- one): entry, value; nil when none.
function P.take(at, t)
  for e, v in P.each(at, t) do
    local n = type(v) == "table" and tonumber(v.count or 1) or tonumber(v)
    if n and n > 0 then
      if type(v) == "table" then v.count = n - 1 else t.faults[e[1]] = n - 1 end
      return e, v
    end
  end
  return nil
end

-- The fault (if any) that answers this status read of task t in the envelope of api; counts
-- it down. "malformed": the read's own answer, cut.
function Model:api_fault(t, ctx, api)
  local e, v = P.take("status", t)
  if e then return e.play(self, api, v, ctx) end
  return nil
end

-- A status read of task t through api (a provider file's API), shared by all APIs: the
-- task's faults (answered in the API's error shape), its poll count, its data
-- (api.data(self, t, ctx)) in the API's envelope (api.ok(self, data)), or the envelope
-- without data (api.bare(self)) under the wrong_shape fault, a truncated body, a delay.
function Model:status_reply(t, ctx, api)
  local fault = self:api_fault(t, ctx, api)
  if fault and fault ~= "malformed" then return fault end
  t.polls = t.polls + 1
  local data, present = api.data(self, t, ctx), true
  for e, v in P.each("data", t) do data, present = e.play(v, data) end
  local resp
  if present then resp = api.ok(self, data) else resp = api.bare(self) end
  if fault == "malformed" then B.truncate(resp) end
  for e, v in P.each("reply", t) do e.play(resp, v) end
  return resp
end

----------------------------------------------------------------------------------------------
-- request faults: scripted failures of the next creates or uploads (POST /_fake/faults)
--
-- A fault is {on = "create" | "upload", provider = "tripo" | "tripo-v2" | "sellerpic" | nil (any),
-- fault = NAME, count = n (1), created = bool, retry_after = seconds (429), seconds = s (hang;
-- 60)}, NAME a request fault of FAULT_TABLE. `created` says whether the task is made before
-- the fault strikes (the request reached the server, the answer was lost): by default true
-- for the `lost` ones, false for the statuses; the `clean` ones never create. POSTs received
-- are counted in /_fake/stats.

--- Adds a scripted request fault (the body of POST /_fake/faults); returns true or nil, err.
function Model:add_request_fault(f)
  if type(f) ~= "table" then return nil, "a request fault must be a table" end
  if f.on ~= "create" and f.on ~= "upload" then return nil, "a request fault needs on = \"create\" or \"upload\"" end
  if not P.REQUEST_FAULTS[f.fault] then
    local names = {}
    for k in pairs(P.REQUEST_FAULTS) do names[#names + 1] = k end
    table.sort(names)
    return nil, "unknown request fault '" .. tostring(f.fault) .. "' (known: " .. table.concat(names, ", ") .. ")"
  end
  local e = BY_NAME[f.fault]
  local created = f.created
  if is_null(created) then created = e.lost == true end
  if e.clean then created = false end
  local list = self.request_faults
  list[#list + 1] = { on = f.on, provider = (not is_null(f.provider)) and f.provider or nil, fault = f.fault,
    count = max(1, floor(tonumber(f.count) or 1)), created = created == true,
    retry_after = tonumber(f.retry_after) or 1, seconds = tonumber(f.seconds) or 60 }
  return true
end

-- The first scripted fault that applies to this request (counted down), and the request's
-- API, or nil.
function Model:take_request_fault(ctx)
  if #self.request_faults == 0 then return nil end
  local kind, api = self:request_kind(ctx)
  if not kind then return nil end
  for i, f in ipairs(self.request_faults) do
    if f.on == kind and (f.provider == nil or f.provider == api) then
      f.count = f.count - 1
      if f.count <= 0 then table.remove(self.request_faults, i) end
      if ctx.log then ctx.log.fault = f.fault end
      return f, api
    end
  end
  return nil
end

local STATUS_TEXT = { [408] = "Request Timeout", [425] = "Too Early", [429] = "Too Many Requests",
  [500] = "Internal server error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout" }

-- An error answer of status st in the envelope of the API named api ("tripo" (V3),
-- "tripo-v2", "sellerpic").
function Model:api_error(api, st, retry_after)
  local headers = st == 429 and { ["Retry-After"] = tostring(floor(retry_after or 1)) } or nil
  local msg = STATUS_TEXT[st] or "error"
  return answer(self, self:api_named(api), st, { st == 429 and 2000 or 1000, msg, "Retry later" }, { st, msg }, headers)
end

-- Applies fault f to the answer resp the request would have had (nil when the task was not
-- made): the answer a client sees.
function Model:apply_request_fault(f, api, resp)
  local e = BY_NAME[f.fault]
  if e.status then return self:api_error(api, e.status, f.retry_after) end
  resp = resp or self:api_error(api, 500)
  e.play(resp, f)
  return resp
end

return P
