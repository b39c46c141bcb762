-- taskapi.json: a small pure-Lua JSON encoder (Lua 5.4 and LuaJIT 2.1).
--
--   json.encode(v) -> string | nil, err
--
-- * integers stay integers: on Lua 5.4 math.type(v) == "integer" -> %d; a float (or any
--   LuaJIT number) that is integral with |v| < 2^53 -> %d; other numbers: the shortest of
--   %.14g / %.17g that reads back exactly. NaN and infinities are errors.
-- * strings: `"` and `\` escaped, control characters as \u00XX, `/` and bytes >= 0x80 as is.
-- * tables: a sequence (keys 1..n) is an array; otherwise every key must be a string and
--   the object's keys come out sorted (stable output). An empty table is `{}`; use
--   json.array(t) to mark a table (empty or not) as an array.
-- * json.null, cjson.null (and core.null, the same lightuserdata) encode to null.
-- * json.raw("1869254713398571010") emits a number literal verbatim (exact int64 ids).
-- * cycles and nesting deeper than 100 are errors.
local M = {}

local type, pairs, tostring, tonumber = type, pairs, tostring, tonumber
local format, gsub, concat, sort = string.format, string.gsub, table.concat, table.sort
local floor, huge = math.floor, math.huge
local math_type = math.type -- nil on LuaJIT

M.MAX_DEPTH = 100

local null_mt = { __tostring = function() return "null" end, __name = "taskapi.json.null" }
M.null = setmetatable({}, null_mt)

local cjson_null
do
  local ok, cjson = pcall(require, "cjson")
  if ok and type(cjson) == "table" then cjson_null = cjson.null end
end

local array_mt = { __name = "taskapi.json.array" }
local raw_mt = { __name = "taskapi.json.raw" }

--- Marks t (default: a new empty table) as a JSON array; returns t.
function M.array(t)
  t = t or {}
  local mt = getmetatable(t)
  if mt == nil then setmetatable(t, array_mt) end
  return t
end

--- A number literal emitted verbatim. digits must be a valid JSON number.
function M.raw(digits)
  digits = tostring(digits)
  assert(digits:match("^%-?%d+%.?%d*[eE]?[%+%-]?%d*$") and digits:match("^%-?%d"),
    "json.raw: not a JSON number: " .. digits)
  return setmetatable({ digits }, raw_mt)
end

function M.is_null(v)
  return v == M.null or (cjson_null ~= nil and v == cjson_null)
end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\' }
for i = 0, 31 do escapes[string.char(i)] = format("\\u%04x", i) end

local function encode_string(s)
  return '"' .. gsub(s, '[%c"\\]', function(c)
    return escapes[c] or c -- %c also matches \127, which stays as is
  end) .. '"'
end

local TWO53 = 2 ^ 53

local function encode_number(v)
  if v ~= v or v == huge or v == -huge then return nil, "cannot encode " .. tostring(v) .. " in JSON" end
  if math_type and math_type(v) == "integer" then return format("%d", v) end
  if floor(v) == v and v > -TWO53 and v < TWO53 then return format("%d", v) end
  local s = format("%.14g", v)
  if tonumber(s) ~= v then s = format("%.17g", v) end
  return s
end
M.encode_number = encode_number

local function is_sequence(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then return false end
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true, n
end

local encode_value

local function encode_table(t, depth, seen, out)
  if depth > M.MAX_DEPTH then return nil, "nesting deeper than " .. M.MAX_DEPTH end
  if seen[t] then return nil, "cannot encode a cycle" end
  local mt = getmetatable(t)
  if mt == raw_mt then out[#out + 1] = t[1]; return true end
  if mt == null_mt then out[#out + 1] = "null"; return true end
  seen[t] = true
  local seq, n = is_sequence(t)
  if mt == array_mt and not seq then
    seen[t] = nil
    return nil, "json.array table has non-sequence keys"
  end
  if seq and (n > 0 or mt == array_mt) then
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      local ok, err = encode_value(t[i], depth + 1, seen, out)
      if not ok then return nil, err end
    end
    out[#out + 1] = "]"
  else
    local keys = {}
    for k in pairs(t) do
      if type(k) ~= "string" then
        seen[t] = nil
        return nil, "cannot encode a table with a " .. type(k) .. " key as a JSON object"
      end
      keys[#keys + 1] = k
    end
    sort(keys)
    out[#out + 1] = "{"
    for i = 1, #keys do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = encode_string(keys[i])
      out[#out + 1] = ":"
      local ok, err = encode_value(t[keys[i]], depth + 1, seen, out)
      if not ok then return nil, err end
    end
    out[#out + 1] = "}"
  end
  seen[t] = nil
  return true
end

encode_value = function(v, depth, seen, out)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = encode_string(v)
  elseif tv == "number" then
    local s, err = encode_number(v)
    if not s then return nil, err end
    out[#out + 1] = s
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif tv == "table" then
    return encode_table(v, depth, seen, out)
  elseif v == nil or (cjson_null ~= nil and v == cjson_null) then
    out[#out + 1] = "null"
  else
    return nil, "cannot encode a " .. tv .. " in JSON"
  end
  return true
end

--- Encodes v as JSON: string, or nil and an error message.
function M.encode(v)
  local out = {}
  local ok, err = encode_value(v, 1, {}, out)
  if not ok then return nil, err end
  return concat(out)
end

return M
