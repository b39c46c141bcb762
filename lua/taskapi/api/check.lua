-- taskapi.api.check: the rules options are checked by, in one place. A rule is a small table:
-- {"number", above = 0 | min = 0, max = n, integer = true, unit = "seconds"}, {"boolean"},
-- {"function"}. M.options checks a table of options against a table of rules before any
-- request, and answers nil, err (kind invalid_argument) naming the option, what it must be
-- and what it got. Every public entry point's options go through here.
local errors = require "taskapi.errors"

local M = {}

local huge = math.huge

local function got(v)
  if type(v) == "number" then return v ~= v and "NaN" or tostring(v) end
  return type(v)
end

-- What a number rule asks for, in words ("a positive number of seconds up to 86400").
local function describe(r)
  local what = r.integer and "a whole number" or r.above == 0 and "a positive number" or "a number"
  if r.unit then what = what .. " of " .. r.unit end
  if r.integer and r.min and r.max then return what .. " from " .. r.min .. " to " .. r.max end
  if r.min == 0 then what = what .. ", 0 or more" end
  if r.max then what = what .. " up to " .. r.max end
  return what
end

--- Checks v against a number rule; returns v, or nil, err naming `label`. NaN and the
--- infinities never pass.
function M.number(v, label, r)
  if type(v) ~= "number" or v ~= v or v == huge or v == -huge or (r.above and v <= r.above) or
      (r.min and v < r.min) or (r.max and v > r.max) or (r.integer and v % 1 ~= 0) then
    return errors.invalid(label .. " must be " .. describe(r) .. ", got " .. got(v))
  end
  return v
end

--- Checks one value against a rule; returns v, or nil, err naming `label`.
function M.value(v, label, r)
  local t = r[1]
  if t == "number" then return M.number(v, label, r) end
  if type(v) ~= t then return errors.invalid(label .. " must be a " .. t .. ", got " .. got(v)) end
  return v
end

--- Refuses a key of opts that `rules` does not name ("unknown <what> option 'x' (known: ...)").
function M.known(opts, rules, what)
  for k in pairs(opts) do
    if rules[k] == nil then
      local names = {}
      for n in pairs(rules) do names[#names + 1] = n end
      table.sort(names)
      return errors.invalid("unknown " .. what .. "option '" .. tostring(k):sub(1, 40) .. "' (known: " ..
        table.concat(names, ", ") .. ")")
    end
  end
  return true
end

--- Checks every option of opts that rules has a rule for (a rule of `true` is checked by its
--- caller); copies the checked values into out. what: "download " for "download option 'x'",
--- "" for "option 'x'". Returns out, or nil, err.
function M.options(opts, rules, what, out)
  for k, r in pairs(rules) do
    local v = opts[k]
    if v ~= nil and r ~= true then
      local ok, err = M.value(v, what .. "option '" .. k .. "'", r)
      if ok == nil then return nil, err end
      out[k] = v
    end
  end
  return out
end

-- Rules used in more than one place.
M.POSITIVE = { "number", above = 0 }
M.NON_NEGATIVE = { "number", min = 0 }
M.SECONDS = { "number", above = 0, unit = "seconds" }
M.NON_NEGATIVE_SECONDS = { "number", min = 0, unit = "seconds" }
M.BOOLEAN = { "boolean" }
M.FUNCTION = { "function" }

return M
