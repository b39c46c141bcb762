-- taskapi.api.provider: what every provider shares. A provider definition (providers/*.lua) is
-- data: URLs, the status map, output names, the envelope's field names, plus one small
-- function that reads its task payload. This module turns those into checked ids, errors
-- from responses, and the normalized task table of the public contract.
local errors = require "taskapi.errors"

local M = {}

-- The built-in providers: name -> module. `tripo` is Tripo's current API (V3), `tripo-v2` the
-- seed's V2.
local BUILTIN = {
  tripo = "taskapi.providers.tripo", ["tripo-v2"] = "taskapi.providers.tripo_v2",
  sellerpic = "taskapi.providers.sellerpic",
}
M.BUILTIN_NAMES = { "tripo", "tripo-v2", "sellerpic" }

M.STATES = {
  queued = true, running = true, succeeded = true, failed = true, cancelled = true,
  banned = true, expired = true, unknown = true,
}
local FINAL = { succeeded = true, failed = true, cancelled = true, banned = true, expired = true, unknown = true }
M.FINAL = FINAL

--- Resolves a provider name or definition table into a definition.
function M.load(p)
  if type(p) == "string" then
    local mod = BUILTIN[p:lower()]
    if not mod then
      return errors.invalid("unknown provider '" .. p:sub(1, 40) .. "' (known: " .. table.concat(M.BUILTIN_NAMES, ", ") .. ")")
    end
    return require(mod)
  elseif type(p) == "table" then
    for _, field in ipairs({ "name", "base_url", "status_path", "read_task" }) do
      if p[field] == nil then return errors.invalid("provider definition lacks '" .. field .. "'") end
    end
    for _, field in ipairs({ "link", "file_ext" }) do
      if p[field] ~= nil and type(p[field]) ~= "function" then
        return errors.invalid("provider definition's '" .. field .. "' must be a function")
      end
    end
    if p.refresh == "link" and not p.link then
      return errors.invalid("provider definition's refresh = \"link\" is gone: give link(call, task, out, opts)")
    end
    return p
  end
  return errors.invalid("provider must be a name or a definition table, got " .. type(p))
end

local MAX_SAFE = 9007199254740992 -- 2^53

-- Why id is not a valid task id of def (the error of M.check_id), or the id as a string
-- when it is one (a number of a "digits" provider).
local function check_id_slow(def, id)
  local what = def.name .. " task id"
  if def.id_syntax == "digits" then
    if type(id) == "number" then
      if id ~= id or id == math.huge or id == -math.huge then return errors.invalid(what .. " is not a finite number") end
      if id < 0 or id % 1 ~= 0 then return errors.invalid(what .. " " .. tostring(id) .. " is not a whole positive number") end
      if math.type and math.type(id) == "integer" then return string.format("%d", id) end
      if id >= MAX_SAFE then
        return errors.invalid(what .. " " .. string.format("%.17g", id) ..
          " is a float above 2^53 and may have lost digits: pass the id as a string")
      end
      return string.format("%d", id)
    elseif type(id) == "string" then
      if id == "" then return errors.invalid(what .. " is empty") end
      if not id:match("^%d+$") then return errors.invalid(what .. " '" .. id:sub(1, 40) .. "' must be digits only") end
      if #id > 20 then return errors.invalid(what .. " has " .. #id .. " digits; an int64 has at most 19") end
      return id
    end
    return errors.invalid(what .. " must be a string of digits or an integer, got " .. type(id))
  end
  if type(id) ~= "string" then return errors.invalid(what .. " must be a string, got " .. type(id)) end
  if id == "" then return errors.invalid(what .. " is empty") end
  if #id > 256 then return errors.invalid(what .. " is " .. #id .. " bytes long (at most 256)") end
  if id:find("..", 1, true) then return errors.invalid(what .. " contains '..'") end
  local bad = id:match("[^%w%-_%.~]")
  if bad then
    local shown = bad:match("%c") and string.format("\\%d", bad:byte()) or bad == " " and "a space" or "'" .. bad .. "'"
    return errors.invalid(what .. " contains " .. shown .. " (only letters, digits and - _ . ~ are URL-safe)")
  end
  return id
end

local find = string.find

--- Checks a task id before any request and returns it as a string.
--- def.id_syntax: "digits" (int64 as a string or a Lua integer) or "token" (URL-safe string).
--- A valid string id costs one pattern scan (and a plain search for ".."); anything else
--- goes through check_id_slow, which says what is wrong.
function M.check_id(def, id)
  if type(id) == "string" then
    local n = #id
    if def.id_syntax == "digits" then
      if n <= 20 and find(id, "^%d+$") then return id end
    elseif n <= 256 and find(id, "^[%w%-_%.~]+$") and not find(id, "..", 1, true) then
      return id
    end
  end
  return check_id_slow(def, id)
end

local function kind_of_status(status)
  if status == 400 or status == 422 then return "invalid_argument", false end
  if status == 401 or status == 403 then return "auth", false end
  if status == 404 then return "not_found", false end
  if status == 408 then return "timeout", true end
  if status == 429 then return "rate_limited", true end
  if status >= 500 then return "server", true end
  return "bad_response", false
end

local function envelope_fields(def, body)
  if type(body) ~= "table" then return nil, nil end
  local env = def.envelope
  local code = body[env.code]
  local msg = body[env.message]
  if env.suggestion and type(body[env.suggestion]) == "string" then
    msg = (msg and tostring(msg) .. ": " or "") .. body[env.suggestion]
  end
  if type(msg) ~= "string" then msg = nil end
  return code, msg
end

local function trace_of(def, res, body)
  if res.trace_id then return res.trace_id end
  local f = def.envelope.trace
  if f and type(body) == "table" and type(body[f]) == "string" then return body[f] end
  return nil
end

-- The fields of an error from one response (built only when the response is an error).
local function fields_of(def, res, body, code, task_id)
  return { status = res.status, code = code, trace_id = trace_of(def, res, body), task_id = task_id,
    retry_after = res.retry_after }
end

--- Turns one HTTP response of the API into its `data` payload, or into an error.
--- A JSON body is expected in res.json (decoded by the transport with integers exact).
function M.unwrap(def, res, task_id)
  local body = res.json
  local code, msg = envelope_fields(def, body)
  if res.status < 200 or res.status > 299 then
    local fields = fields_of(def, res, body, code, task_id)
    local kind, retryable = kind_of_status(res.status)
    -- HTTP 401 is an authentication failure whatever the body's code (Tripo V3 sends code 2)
    local special = res.status ~= 401 and code ~= nil and def.codes and def.codes[code]
    if special then kind, retryable = special[1], special[2] end
    fields.retryable = retryable
    if not msg then
      local snippet = type(res.body) == "string" and res.body:sub(1, 120):gsub("%s+", " ") or ""
      msg = "HTTP " .. res.status .. (snippet ~= "" and ": " .. snippet or "")
    end
    return nil, errors.new(kind, def.name .. ": " .. msg, fields)
  end
  if body == nil then
    -- A 2xx answer that does not decode is most often a truncated one: transient, retried.
    local fields = fields_of(def, res, body, code, task_id)
    fields.retryable = true
    return nil, errors.new("bad_response", def.name .. ": response is not JSON (" ..
      tostring(res.json_error or res.content_type or "empty body") .. ")", fields)
  end
  if type(body) ~= "table" then
    return nil, errors.new("bad_response", def.name .. ": response is a JSON " .. type(body) .. ", not an object",
      fields_of(def, res, body, code, task_id))
  end
  if code ~= 0 then
    local fields = fields_of(def, res, body, code, task_id)
    local special = def.codes and def.codes[code]
    fields.retryable = special and special[2] or false
    return nil, errors.new(special and special[1] or (code == nil and "bad_response" or "server"),
      def.name .. ": " .. (code == nil and "response has no '" .. def.envelope.code .. "' field"
        or (msg or "error code " .. tostring(code))), fields)
  end
  local data = body[def.envelope.data]
  if type(data) ~= "table" then
    return nil, errors.new("bad_response", def.name .. ": response has no '" .. def.envelope.data .. "' object",
      fields_of(def, res, body, code, task_id))
  end
  return data, trace_of(def, res, body)
end

local floor, tointeger = math.floor, math.tointeger -- (tointeger: nil on LuaJIT)

-- A count the API gives (progress, queue position, ETA) as a whole number >= 0, or nil.
local function int_or_nil(v)
  if type(v) ~= "number" or v ~= v or v < 0 then return nil end
  if tointeger then return tointeger(floor(v)) end
  return floor(v)
end

-- Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  -- (math.floor, no // operator: LuaJIT parses this file too)
  local era = floor((y >= 0 and y or y - 399) / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
M.days_from_civil = days_from_civil

local byte = string.byte

-- DIGIT[b]: the value of the ASCII digit b (1..127 in the array part; anything else nil).
local DIGIT = {}
for b = 1, 127 do DIGIT[b] = false end
for b = 48, 57 do DIGIT[b] = b - 48 end

-- Days from 1970-01-01 to the first of each month seen (a month's start computed once).
local month_start = {}

--- An ISO 8601 date-time ("2026-12-03T08:45:40Z", "...40.125+08:00", "... 08:45:40") as Unix
--- seconds (a number, fractions kept), or nil when it is not one. No offset means UTC.
--- The date and time are read as bytes (no pattern, no captures, no tonumber).
function M.iso_time(s)
  if type(s) ~= "string" or #s > 64 or #s < 19 then return nil end
  local y1, y2, y3, y4, c1, m1, m2, c2, d1, d2, t, h1, h2, c3, i1, i2, c4, s1, s2 = byte(s, 1, 19)
  if c1 ~= 45 or c2 ~= 45 or c3 ~= 58 or c4 ~= 58 or (t ~= 84 and t ~= 116 and t ~= 32) then return nil end
  y1, y2, y3, y4 = DIGIT[y1], DIGIT[y2], DIGIT[y3], DIGIT[y4]
  m1, m2, d1, d2, h1, h2 = DIGIT[m1], DIGIT[m2], DIGIT[d1], DIGIT[d2], DIGIT[h1], DIGIT[h2]
  i1, i2, s1, s2 = DIGIT[i1], DIGIT[i2], DIGIT[s1], DIGIT[s2]
  if not (y1 and y2 and y3 and y4 and m1 and m2 and d1 and d2 and h1 and h2 and i1 and i2 and s1 and s2) then
    return nil
  end
  local y, mo, d = y1 * 1000 + y2 * 100 + y3 * 10 + y4, m1 * 10 + m2, d1 * 10 + d2
  local h, mi, sec = h1 * 10 + h2, i1 * 10 + i2, s1 * 10 + s2
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
  local frac, offset = 0, 0
  local n = #s
  if n > 19 and not (n == 20 and (byte(s, 20) == 90 or byte(s, 20) == 122)) then -- not a lone Z
    local rest = s:sub(20)
    local f, after = rest:match("^([.,]%d+)(.*)$")
    if f then frac, rest = tonumber("0." .. f:sub(2)), after end
    if rest ~= "Z" and rest ~= "z" and rest ~= "" then
      local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
      if not sign then return nil end
      offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
    end
  end
  local key = y * 16 + mo
  local first = month_start[key]
  if not first then
    first = days_from_civil(y, mo, 1)
    month_start[key] = first
  end
  return (first + d - 1) * 86400 + h * 3600 + mi * 60 + sec - offset + frac
end

--- A time the API gives as Unix seconds (a number) or as an ISO 8601 string, as Unix seconds.
function M.time_of(v)
  if type(v) == "number" then
    if v ~= v or v <= 0 or v == math.huge then return nil end
    return v
  end
  return M.iso_time(v)
end

--- A number the API gives as a number or a decimal string ("12.50"), or nil.
function M.number_of(v)
  if type(v) == "string" and #v <= 32 then v = tonumber(v) end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return nil end
  return v
end

--- Builds the normalized task from a provider payload. def.read_task(data) returns
--- {status=raw status, progress=, queue_position=, eta=, outputs=, error=, state=?, type=,
--- created_at=, completed_at= (numbers or ISO strings), credits=, values= (non-URL outputs)}:
--- a new table each call, which becomes the task (its fields normalized in place, the task's
--- others added), so a status call makes one task table, not a reader's table and a copy.
function M.task(def, data, id, trace_id, null)
  local task = def.read_task(data, null)
  local state = task.state
  if state == nil and task.status == nil then
    -- No status at all is a malformed answer, not an unknown (finalized) status.
    return nil, errors.new("bad_response", def.name .. ": task payload has no status",
      { task_id = id, trace_id = trace_id })
  end
  if not state then
    state = def.states[task.status]
    if not state then state = "unknown" end
  end
  task.id, task.provider, task.state = id, def.name, state
  task.done, task.ok = FINAL[state] == true, state == "succeeded"
  local progress = int_or_nil(task.progress)
  if progress and progress > 100 then progress = 100 end
  task.progress = progress
  task.queue_position, task.eta = int_or_nil(task.queue_position), int_or_nil(task.eta)
  if not task.outputs then task.outputs = {} end
  task.trace_id = trace_id
  if type(task.type) ~= "string" then task.type = nil end
  task.created_at, task.completed_at = M.time_of(task.created_at), M.time_of(task.completed_at)
  task.credits = M.number_of(task.credits)
  task.raw = data
  return task
end

return M
