-- taskapi.fake.inprocess: the fake provider's model behind an in-process transport (no sockets).
--
--   local fake = require "taskapi.fake"
--   local f = fake.new{clock = function() return t end,   -- all options of model.new, plus
--                      sleep = function(s) t = t + s end} -- (a clock given: virtual time, see transport)
--                                                          -- url, sleep (function(seconds))
--   local id = f:add_task{provider = "tripo", queue = 0, run = 1}
--   local client = taskapi.new{provider = "tripo", api_key = "test-key",
--                              base_url = f:base_url("tripo"), transport = f:transport()}
--
-- f:transport() answers request(self, req) with the shape of the C module's m:request(req):
-- req = {method, url, headers = {"Name: value", ...}, body, json, timeout, low_speed_time,
-- max_body, and for downloads path, part, resume, max_bytes, keep_partial};
-- res = {status, headers (lower case), content_type, retry_after, trace_id, effective_url,
-- redirects, time, body | json, json_error | path, bytes, resumed, filename};
-- errors are plain tables {kind=, message=, retryable=}.
local model = require "taskapi.fake.model"
local files = require "taskapi.util.files"

local M = {}

local floor, min = math.floor, math.min
local CHUNK = 65536

-- The answer fields of the model's FAULT_TABLE this host plays (Fake:request).
model.check_host("taskapi.fake.inprocess", { delay = true, reset = true, drop_after = true, lie_length = true, stall = true })

local function default_clock_and_sleep()
  local ok, socket = pcall(require, "socket")
  if ok and type(socket) == "table" and socket.gettime then
    return socket.gettime, socket.sleep
  end
  return os.time, function(s)
    if s and s > 0 then os.execute("sleep " .. string.format("%.3f", s)) end
  end
end

-- The C module: exact JSON integers and the same header parsers the real transport uses (one
-- owner of each parse: the 86,400 s cap of Retry-After, filename* and the rest hold here too).
local core = require "taskapi.core"

local function json_decode(s)
  local v, err = core.json_decode(s)
  if v == nil then return nil, type(err) == "table" and err.message or tostring(err) end
  return v
end

--- Retry-After in whole seconds from now (the C module's parse), or nil.
function M.parse_retry_after(v, now)
  if type(v) ~= "string" then return nil end
  return core.parse_retry_after(v, floor(now or os.time()))
end

--- A safe base name from Content-Disposition (never holds / \ or ..), or nil (the C module's).
function M.parse_content_disposition(v)
  if type(v) ~= "string" then return nil end
  return core.parse_content_disposition(v)
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local out = {}
  if not q or q == "" then return out end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape((k:gsub("%+", " ")))
    v = unescape((v:gsub("%+", " ")))
    out[k] = v
  end
  return out
end

local file_size = files.size

local function terr(kind, message, retryable, extra)
  local e = { kind = kind, message = message, retryable = retryable or false }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

--- The multipart/form-data body of req.mime (the C module's part shapes: {name=, path=,
--- type=, filename=} or {name=, data=}); sets headers["content-type"]. The fake reads the
--- file into memory: it is a test double, the C module streams it.
function M.multipart_body(mime, headers)
  if type(mime) ~= "table" or #mime == 0 then return nil, terr("invalid_argument", "req.mime must be an array of parts") end
  local boundary = "------------------------taskapifake" .. tostring(#mime)
  local out = {}
  for i, p in ipairs(mime) do
    if type(p) ~= "table" or type(p.name) ~= "string" or (p.path == nil) == (p.data == nil) then
      return nil, terr("invalid_argument", "req.mime[" .. i .. "]: needs name and exactly one of path or data")
    end
    local disp = 'Content-Disposition: form-data; name="' .. p.name .. '"'
    local data, ctype = p.data, nil
    if p.path then
      local f = io.open(p.path, "rb")
      if not f then return nil, terr("invalid_argument", "req.mime[" .. i .. "]: cannot read the file") end
      data = f:read("*a")
      f:close()
      disp = disp .. '; filename="' .. (p.filename or p.path:match("([^/]*)$")) .. '"'
      ctype = p.type or "application/octet-stream"
    end
    out[#out + 1] = "--" .. boundary .. "\r\n" .. disp .. "\r\n" ..
      (ctype and "Content-Type: " .. ctype .. "\r\n" or "") .. "\r\n" .. data .. "\r\n"
  end
  out[#out + 1] = "--" .. boundary .. "--\r\n"
  headers["content-type"] = "multipart/form-data; boundary=" .. boundary
  return table.concat(out)
end

-- Reads length bytes from path at offset, calling sink(chunk) per 64 KiB.
local function stream(path, offset, length, sink)
  if length <= 0 then return true end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  f:seek("set", offset)
  local left = length
  while left > 0 do
    local chunk = f:read(min(CHUNK, left))
    if not chunk then break end
    local ok, serr = sink(chunk)
    if not ok then f:close(); return nil, serr end
    left = left - #chunk
  end
  f:close()
  return true
end

local Fake = {}
Fake.__index = Fake

function M.new(opts)
  opts = opts or {}
  local dclock, dsleep = default_clock_and_sleep()
  local self = setmetatable({}, Fake)
  self.url = (opts.url or "http://fake.invalid"):gsub("/+$", "")
  self.clock = opts.clock or dclock
  self.virtual = opts.clock ~= nil
  self.sleep = opts.sleep or dsleep
  local mopts = {}
  for k, v in pairs(opts) do mopts[k] = v end
  mopts.clock, mopts.base_url = self.clock, self.url
  self.model = model.new(mopts)
  self.log = self.model.log
  return self
end

function Fake:add_task(spec) return self.model:add_task(spec) end
function Fake:reset() return self.model:reset() end
function Fake:advance(s) return self.model:advance(s) end
function Fake:task(id) return self.model:task(id) end
function Fake:handle(req) return self.model:handle(req) end

-- The Tripo API the built-in "tripo" provider speaks: V3 when its default base URL says so.
local function tripo_prefix()
  local ok, def = pcall(require, "taskapi.providers.tripo")
  if ok and type(def) == "table" and type(def.base_url) == "string" and def.base_url:match("/v3/?$") then
    return model.TRIPO_V3_PREFIX
  end
  return model.TRIPO_V2_PREFIX
end

--- The base URL a client of `provider` uses against this fake: "sellerpic", "tripo-v2" (V2),
--- "tripo-v3" (V3), "tripo" (the API the built-in tripo provider speaks).
function Fake:base_url(provider)
  if provider == "sellerpic" then return self.url .. model.SELLERPIC_PREFIX end
  if provider == "tripo-v2" then return self.url .. model.TRIPO_V2_PREFIX end
  if provider == "tripo-v3" then return self.url .. model.TRIPO_V3_PREFIX end
  return self.url .. tripo_prefix()
end

--- The transport for a client (taskapi.new's transport option). When the fake was made with
--- its own clock (virtual time), the transport also gives the client that clock and sleep
--- (now, sleep), so a client's waits and retries move the fake's time instead of sleeping.
function Fake:transport()
  local fake = self
  local t = {
    fake = fake,
    request = function(_, req) return fake:request(req) end,
    close = function() end,
  }
  if fake.virtual then
    t.now = function() return fake.clock() end
    t.sleep = function(_, s) fake.sleep(s) end
  end
  return t
end

local function split_url(url)
  local scheme, authority, rest = url:match("^(%a[%w+.-]*)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  rest = rest:gsub("#.*$", "")
  local path, query = rest:match("^([^?]*)%??(.*)$")
  if path == "" then path = "/" end
  return scheme:lower() .. "://" .. authority:lower(), path, query
end

function Fake:request(req)
  local started = self.clock()
  if type(req) ~= "table" or type(req.url) ~= "string" then
    return nil, terr("invalid_argument", "request: url (a string) is required")
  end
  local origin, path, query = split_url(req.url)
  if not origin then return nil, terr("invalid_argument", "request: bad url " .. req.url) end
  if origin ~= self.url:lower() then
    return nil, terr("transport", "Could not resolve host: " .. origin .. " (the in-process fake is " .. self.url .. ")", true)
  end
  local headers = {}
  for k, v in pairs(req.headers or {}) do
    if type(k) == "number" then
      local name, value = tostring(v):match("^%s*([^:]+):%s*(.-)%s*$")
      if name then headers[name:lower()] = value end
    else
      headers[tostring(k):lower()] = tostring(v)
    end
  end
  if req.user_agent then headers["user-agent"] = req.user_agent end
  local download = req.path ~= nil
  local part = download and (req.part or (req.path .. ".part")) or nil
  local have = 0
  if download and req.resume then
    have = file_size(part) or 0
    if have > 0 and not headers.range then headers.range = "bytes=" .. have .. "-" end
  end

  local body = req.body
  if req.mime ~= nil then
    local merr
    body, merr = M.multipart_body(req.mime, headers)
    if not body then return nil, merr end
  end
  if req.body_file ~= nil then -- the C module's req.body_file (branch presign): the raw bytes
    local f = type(req.body_file) == "string" and io.open(req.body_file, "rb")
    if not f then return nil, terr("invalid_argument", "req.body_file: cannot read the file") end
    body = f:read("*a")
    f:close()
    if req.body_type then headers["content-type"] = req.body_type end
  end
  local resp = self.model:handle({
    method = req.method or "GET", path = unescape(path), query = parse_query(query),
    headers = headers, body = body,
  })

  if resp.delay then
    local limit = tonumber(req.timeout) or 30
    if resp.delay >= limit then
      self.sleep(limit)
      return nil, terr("timeout", string.format("Operation timed out after %d milliseconds", floor(limit * 1000)), true,
        { sent = true })
    end
    self.sleep(resp.delay)
  end
  if resp.reset then -- a scripted fault: the server closed the connection without an answer
    return nil, terr("transport", "Server returned nothing (no headers, no data)", true, { sent = true })
  end

  local res = { status = resp.status, headers = {}, effective_url = req.url, redirects = 0 }
  for k, v in pairs(resp.headers or {}) do res.headers[tostring(k):lower()] = v end
  local ct = res.headers["content-type"]
  res.content_type = type(ct) == "string" and core.parse_content_type(ct) or nil
  local ra = res.headers["retry-after"]
  if ra then res.retry_after = M.parse_retry_after(ra, self.clock()) end
  if type(req.trace_header) == "string" then res.trace_id = res.headers[req.trace_header:lower()] end
  local cd = res.headers["content-disposition"]
  if cd then
    res.filename = M.parse_content_disposition(cd)
  end
  local ok2xx = resp.status >= 200 and resp.status < 300

  -- a file answer: how much of it is really sent, and how it ends
  local send_len, fail
  if resp.file and not resp.head then
    send_len = resp.length
    if resp.drop_after then
      send_len = resp.drop_after
      fail = terr("transport", string.format("Connection closed: transfer closed with %d bytes remaining to read",
        resp.length - resp.drop_after), true)
    elseif resp.lie_length then
      local declared = tonumber(res.headers["content-length"]) or resp.length
      fail = terr("transport", string.format("transfer closed with %d bytes remaining to read",
        declared - resp.length), true)
    end
  end

  local function stall_check()
    if resp.stall then
      local lst = tonumber(req.low_speed_time) or 30
      if resp.stall >= lst then
        return terr("timeout", string.format("Operation too slow: less than 1 bytes/sec for %d seconds", lst), true)
      end
    end
  end

  if not download or not ok2xx then
    local text = resp.body or ""
    if resp.file and not resp.head then
      local stop = send_len
      local serr = stall_check()
      if serr then stop = min(stop, resp.stall_after or 0)
      elseif resp.stall then self.sleep(resp.stall) end
      local parts = {}
      local okr, rerr = stream(resp.file, resp.offset, stop, function(ch) parts[#parts + 1] = ch; return true end)
      if not okr then return nil, terr("io", tostring(rerr)) end
      text = table.concat(parts)
      if serr then return nil, serr end
      if fail then return nil, fail end
    end
    local limit = tonumber(req.max_body) or 8 * 1024 * 1024
    if download then limit = 65536 end
    if #text > limit then
      if download then text = text:sub(1, limit)
      else return nil, terr("bad_response", "response body too large (over " .. limit .. " bytes)") end
    end
    res.body = text
    if download and part and not req.keep_partial then os.remove(part) end
    if req.json and not download then
      local v, jerr = json_decode(text)
      if v == nil then res.json_error = jerr else res.json = v end
    end
    res.time = self.clock() - started
    return res
  end

  -- download mode, 2xx
  local resumed = resp.status == 206 and have > 0 and res.headers["content-range"] ~= nil
    and tonumber(res.headers["content-range"]:match("^bytes (%d+)%-")) == have
  local total = resumed and (have + resp.length) or resp.length
  if resp.head then total = 0 end
  local function fail_download(e, keep)
    if not (keep and req.keep_partial) then os.remove(part) end
    return nil, e
  end
  if req.max_bytes and total > req.max_bytes then
    return fail_download(terr("download", "file larger than max_bytes (" .. req.max_bytes .. ")"), false)
  end
  local f, oerr = io.open(part, resumed and "ab" or "wb")
  if not f then return nil, terr("io", "cannot open " .. part .. ": " .. tostring(oerr)) end
  local written = 0
  local stop = send_len or 0
  local serr = stall_check()
  if serr then stop = min(stop, resp.stall_after or 0) end
  local okw, werr = stream(resp.file, resp.offset or 0, resp.head and 0 or stop, function(ch)
    local ok, e = f:write(ch)
    if not ok then return nil, e end
    written = written + #ch
    return true
  end)
  f:close()
  if not okw then return fail_download(terr("io", "write " .. part .. ": " .. tostring(werr)), false) end
  if serr then return fail_download(serr, true) end
  if resp.stall and not serr then self.sleep(resp.stall) end
  if fail then return fail_download(fail, true) end
  local okr, rerr = os.rename(part, req.path)
  if not okr then return fail_download(terr("io", "rename " .. part .. ": " .. tostring(rerr)), false) end
  res.path = req.path
  res.bytes = file_size(req.path)
  res.resumed = resumed or nil
  res.time = self.clock() - started
  return res
end

return M
