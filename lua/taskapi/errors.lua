-- taskapi.errors: the one error value of the library. Every failure is `nil, err` where err is
-- a table {kind=, message=, status=, code=, retryable=, trace_id=, task_id=} that prints on one
-- line and never holds the API key (redact() is applied wherever outside text enters an error).
local M = {}

M.KINDS = {
  invalid_argument = true, auth = true, not_found = true, rate_limited = true, server = true,
  transport = true, timeout = true, bad_response = true, task_failed = true, download = true,
  io = true, cancelled = true, runtime = true,
}

local Error = {}
Error.__index = Error
M.Error = Error

function Error.__tostring(e)
  local parts = { "taskapi " .. tostring(e.kind) .. ": " .. tostring(e.message) }
  local extra = {}
  if e.status then extra[#extra + 1] = "HTTP " .. tostring(e.status) end
  if e.code ~= nil then extra[#extra + 1] = "code " .. tostring(e.code) end
  -- the task once: not again when the message already names it
  if e.task_id and not tostring(e.message):find("task " .. tostring(e.task_id), 1, true) then
    extra[#extra + 1] = "task " .. tostring(e.task_id)
  end
  if e.trace_id then extra[#extra + 1] = "trace " .. tostring(e.trace_id) end
  if #extra > 0 then parts[#parts + 1] = " (" .. table.concat(extra, ", ") .. ")" end
  return (table.concat(parts):gsub("[\r\n]+", " "))
end

-- "failed: " .. err and err .. "!" read as tostring(err) does (Lua calls __concat when
-- either operand is an error table).
function Error.__concat(a, b)
  return (getmetatable(a) == Error and Error.__tostring(a) or a) ..
    (getmetatable(b) == Error and Error.__tostring(b) or b)
end

--- Makes an error. fields: any of status, code, retryable, trace_id, task_id, retry_after, task.
function M.new(kind, message, fields)
  local e = {}
  if fields then for k, v in pairs(fields) do e[k] = v end end
  e.kind, e.message = kind, message
  if e.retryable == nil then e.retryable = false end
  return setmetatable(e, Error)
end

function M.is(v)
  return getmetatable(v) == Error
end

--- Gives a table that came from elsewhere (the C module, a transport) the error metatable.
function M.adopt(e)
  if type(e) ~= "table" then return M.new("transport", tostring(e)) end
  if e.retryable == nil then e.retryable = false end
  return setmetatable(e, Error)
end

function M.invalid(message, fields)
  return nil, M.new("invalid_argument", message, fields)
end

local function plain(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

--- Removes every occurrence of secret from the string fields of e (message, and raw text).
function M.redact(e, secret)
  if type(secret) ~= "string" or #secret < 4 then return e end
  local pat = plain(secret)
  for k, v in pairs(e) do
    if type(v) == "string" and v:find(secret, 1, true) then e[k] = v:gsub(pat, "***") end
  end
  return e
end

return M
