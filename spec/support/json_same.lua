-- spec/support/json_same.lua: core.json_decode's value against lua-cjson's for one text: the
-- one comparison of spec/core_json_diff_spec.lua and the json_decode fuzz target (which loads
-- this file). cjson is a private instance (cjson.new(): strict numbers, depth 1000). Core's
-- documented differences: an integer literal beyond 2^53 is a string of its digits (cjson's
-- double is the nearest to it), an integral number fitting a lua_Integer is an integer on
-- 5.3+ (cjson gives floats), a zero is +0 (cjson keeps -0).
local cjson = require("cjson").new()
cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(1000)

local M = { cjson = cjson }

local math_type = math.type -- nil on LuaJIT

local function same(a, b)
  if type(a) == "table" then
    if type(b) ~= "table" then return false end
    for k, v in pairs(a) do
      if not same(v, b[k]) then return false end
    end
    for k in pairs(b) do
      if a[k] == nil then return false end
    end
    return true
  end
  if type(a) == "string" and type(b) == "number" then -- a big integer kept exact
    local d = a:match("^%-?(%d+)$")
    return d ~= nil and #d >= 16 and math.abs(b) >= 2 ^ 53 and tonumber(a) + 0.0 == b
  end
  if type(a) == "number" and type(b) == "number" then
    if math_type then
      local int = b == math.floor(b) and b >= -2 ^ 63 and b < 2 ^ 63
      if (math_type(a) == "integer") ~= int then return false end
    end
    if a == 0 and 1 / a < 0 then return false end
    return a == b
  end
  return a == b
end
M.same = same

--- v: core's value of text s (not nil). Returns true, or false and why.
function M.check(v, s)
  local ok, w = pcall(cjson.decode, s)
  if not ok then return false, "cjson refuses what core accepts: " .. tostring(w) end
  if not same(v, w) then return false, "core's value differs from cjson's" end
  return true
end

return M
