-- core.json_decode (src/json.c) against lua-cjson on generated documents (a seeded PRNG, the
-- same documents on every run and runtime): every value equal but for core's documented
-- differences (spec/support/json_same.lua). Valid documents, then the same documents with a
-- byte changed: whatever core accepts, cjson accepts with an equal value; whatever cjson
-- refuses, core refuses.
local core = require "taskapi.core"
local same = require "spec.support.json_same"

local DOCS = 3000

-- Park-Miller minimal standard generator: exact on integers and on doubles (LuaJIT).
local seed
local function rand(n) -- 1..n
  seed = seed * 16807 % 2147483647
  return seed % n + 1
end

local function pick(list) return list[rand(#list)] end

local WS = { "", "", "", " ", "\n", "\t", "\r\n  " }
local function ws() return pick(WS) end

-- String bodies: plain, escapes, \u (BMP, surrogate pairs), raw UTF-8 bytes.
local PIECES = { "a", "task_id", "Z", "0", " ", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t",
  "\\u0041", "\\u00e9", "\\u20AC", "\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\\u0000", "\\u001f", "caf\195\169",
  "\226\130\172", "http://x/y?z=1&w=2", "{", "]", ":", ",", "1869254713398571010" }
local function str()
  local n, parts = rand(6) - 1, {}
  for i = 1, n do parts[i] = pick(PIECES) end
  return '"' .. table.concat(parts) .. '"'
end

local function digits(n)
  local t = { tostring(rand(9)) }
  for i = 2, n do t[i] = tostring(rand(10) - 1) end
  return table.concat(t)
end

local NUMBERS = { "0", "-0", "1", "-1", "100", "9007199254740992", "-9007199254740992", "9007199254740993",
  "-9007199254740993", "18446744073709551615", "9223372036854775807", "-9223372036854775808",
  "99999999999999999999999", "1.0", "1e3", "1E+3", "2.5e-3", "-0.0", "0.1", "1e400", "-1e400", "1e-400",
  "1.7976931348623157e308", "4.9406564584124654e-324", "123456789.123456789", "1e22", "1e23", "1e18",
  "1e19", "0.30000000000000004" }
local function number()
  local r = rand(4)
  if r == 1 then return pick(NUMBERS) end
  local s = (rand(3) == 1 and "-" or "") .. (rand(5) == 1 and "0" or digits(rand(20)))
  if r >= 3 then s = s .. "." .. digits(rand(18)) end
  if r == 4 or rand(4) == 1 then s = s .. pick({ "e", "E" }) .. pick({ "", "+", "-" }) .. tostring(rand(330) - 1) end
  return s
end

local value
local function array(depth)
  local n, parts = rand(12) - 1, {}
  for i = 1, n do parts[i] = ws() .. value(depth + 1) .. ws() end
  return "[" .. (n == 0 and ws() or table.concat(parts, ",")) .. "]"
end
local function object(depth)
  local n, parts = rand(12) - 1, {}
  for i = 1, n do parts[i] = ws() .. str() .. ws() .. ":" .. ws() .. value(depth + 1) .. ws() end
  return "{" .. (n == 0 and ws() or table.concat(parts, ",")) .. "}"
end
function value(depth)
  local r = rand(depth > 2 and 6 or 8)
  if r == 1 then return str() end
  if r == 2 or r == 3 then return number() end
  if r == 4 then return pick({ "true", "false", "null" }) end
  if r == 5 then return str() end
  if r == 6 then return number() end
  if r == 7 then return array(depth) end
  return object(depth)
end

-- A byte changed: removed, doubled, replaced, or a piece of JSON put in.
local INSERTS = { ",", "]", "}", "[", "{", '"', "\\", ".", "e", "-", "0", " ", "\0", "\n", "\255", "\\u", "null" }
local function mutate(s)
  local i = rand(#s)
  local r = rand(4)
  if r == 1 then return s:sub(1, i - 1) .. s:sub(i + 1) end
  if r == 2 then return s:sub(1, i) .. s:sub(i) end
  if r == 3 then return s:sub(1, i - 1) .. string.char(rand(256) - 1) .. s:sub(i + 1) end
  return s:sub(1, i - 1) .. pick(INSERTS) .. s:sub(i)
end

describe("core.json_decode against lua-cjson", function()
  it("gives cjson's values on " .. DOCS .. " generated documents, but for the documented differences", function()
    seed = 20261204
    local bytes = 0
    for n = 1, DOCS do
      local s = ws() .. value(0) .. ws()
      bytes = bytes + #s
      local v, err = core.json_decode(s)
      if v == nil then error("document " .. n .. " refused: " .. tostring(err.message) .. "\n" .. s) end
      local ok, why = same.check(v, s)
      if not ok then error("document " .. n .. ": " .. why .. "\n" .. s) end
    end
    assert.is_true(bytes > 100000)
  end)

  it("accepts only what cjson accepts, equal, on " .. DOCS .. " documents with a byte changed", function()
    seed = 4122026
    local accepted, refused = 0, 0
    for n = 1, DOCS do
      local s = mutate(value(0))
      local v = core.json_decode(s)
      if v ~= nil then
        accepted = accepted + 1
        local ok, why = same.check(v, s)
        if not ok then error("mutated document " .. n .. ": " .. why .. "\n" .. s) end
      else
        refused = refused + 1
      end
    end
    assert.is_true(accepted > 100 and refused > 100, accepted .. " accepted, " .. refused .. " refused")
  end)
end)
