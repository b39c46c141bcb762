-- taskapi.fake.model.base: what every part of the fake's model shares: copies and JSON null
-- tests, the private JSON decoder, plain answers (JSON, text, the storage XML errors), cut
-- bodies, and the date formats of the APIs. No state.
local json = require "taskapi.json"

local B = {}

local floor, max = math.floor, math.max

local ok_cjson, cjson = pcall(require, "cjson")
local private_cjson
if ok_cjson then
  private_cjson = cjson.new and cjson.new() or cjson
  if private_cjson.decode_max_depth then private_cjson.decode_max_depth(200) end
end

function B.copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = B.copy(v) end
  return c
end

function B.is_null(v)
  return v == nil or json.is_null(v)
end

function B.is_array(t)
  return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

--- A request body decoded (through a private lua-cjson instance), or nil, reason.
function B.decode_json(s)
  if not private_cjson then return nil, "no JSON decoder (lua-cjson)" end
  local ok, v = pcall(private_cjson.decode, s)
  if not ok then return nil, tostring(v) end
  return v
end

function B.http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", floor(t))
end

function B.iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(t))
end

-- A name safe in a file name or a URL path (anything else becomes "_").
function B.safe_name(s)
  return (tostring(s):gsub("[^%w%-_.]", "_"))
end

function B.json_resp(status, value, headers)
  local body, err = json.encode(value)
  if not body then
    status, body = 500, '{"error":"fake: cannot encode the answer: ' .. tostring(err) .. '"}'
  end
  headers = headers or {}
  headers["Content-Type"] = headers["Content-Type"] or "application/json"
  return { status = status, headers = headers, body = body }
end

function B.text_resp(status, body, ctype, headers)
  headers = headers or {}
  headers["Content-Type"] = ctype or "text/plain"
  return { status = status, headers = headers, body = body }
end

-- Object storage's answers to a link or upload URL that is expired, or not known at all.
local EXPIRED_XML = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>' ..
  "<Message>Request has expired</Message></Error>\n"
local DENIED_XML = EXPIRED_XML:gsub("Request has expired", "Access Denied")

function B.expired() return B.text_resp(403, EXPIRED_XML, "application/xml") end
function B.denied() return B.text_resp(403, DENIED_XML, "application/xml") end

-- The answer with its body cut in the middle (at least one byte kept).
function B.truncate(resp)
  local b = resp.body
  resp.body = b:sub(1, max(1, floor(#b / 2)))
  return resp
end

return B
