-- taskapi.fake.model: one pure-Lua model of the SellerPic and Tripo3D task APIs.
--
-- Host-agnostic: a host turns its requests into
--   req  = {method=, path= (decoded, no query), query = {k = v}, headers = {lower-case = value},
--           body = string, base_url = ? (overrides the model's for links in this answer)}
-- and serves what m:handle(req) answers:
--   resp = {status=, headers = {Name = value}, body = string, delay = seconds?}
--   or, for result files,
--   resp = {status=, headers=, file = path, offset=, length=, plain = true when no fault
--           applies, drop_after = bytes?, lie_length = true?, stall = seconds?, stall_after = bytes?,
--           head = true for HEAD}
-- See doc/internals.md ("The fake provider's model") and the task spec below (M.new, add_task).
local json = require "taskapi.json"
local files = require "taskapi.files"
local media = require "taskapi.fake.media"

local M = {}

local ok_cjson, cjson = pcall(require, "cjson")
local cjson_safe
if ok_cjson then
  cjson_safe = cjson.new and cjson.new() or cjson
  if cjson_safe.decode_max_depth then cjson_safe.decode_max_depth(200) end
end

local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local format, concat = string.format, table.concat
local tostring, tonumber, type, pairs, ipairs = tostring, tonumber, type, pairs, ipairs

local TRIPO = "/tripo/v2/openapi"
local SP = "/sellerpic/v1/api"

M.TRIPO_PREFIX = TRIPO
M.SELLERPIC_PREFIX = "/sellerpic"

-- The names a task spec may carry in `faults` (or at its top level).
M.FAULTS = {
  "server_errors", "rate_limit", "malformed_json", "html_error", "code_under_200", "delay",
  "drop_download", "expired_links", "ignore_range", "lie_length", "filename", "stall",
  "stall_count", "wrong_shape",
}

M.TRIPO_FINAL = { success = true, failed = true, banned = true, expired = true, cancelled = true, unknown = true }

local TRIPO_OUTPUT_EXT = {
  model = "glb", base_model = "glb", pbr_model = "glb",
  generated_image = "png", rendered_image = "webp",
}

local CONTENT_TYPES = {
  glb = "model/gltf-binary", gltf = "model/gltf+json", fbx = "application/octet-stream",
  obj = "text/plain", usdz = "model/vnd.usdz+zip",
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", webp = "image/webp", gif = "image/gif",
  mp4 = "video/mp4", bin = "application/octet-stream",
}
M.CONTENT_TYPES = CONTENT_TYPES

local IMAGE_FORMATS = { jpg = true, png = true, webp = true }
local VIDEO_FORMATS = { mp4 = true, gif = true, webp = true }

local VIEWS = { "front_view_url", "left_view_url", "back_view_url", "right_view_url" }

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

local function is_null(v)
  return v == nil or json.is_null(v)
end

local function http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", floor(t))
end
M.http_date = http_date

local mkdir_p, file_size = files.mkdir_p, files.size

--- The deterministic content of a result file, written in 64 KiB blocks: block i starts with
--- its index in decimal (10 digits and a space) and goes on with "<seed>\n" repeated.
local BLOCK = 65536
local function block_base(seed)
  local unit = seed .. "\n"
  local reps = ceil(BLOCK / #unit)
  return string.rep(unit, reps):sub(1, BLOCK)
end

local function block(base, i)
  return format("%010d ", i) .. base:sub(12)
end

function M.generate_file(path, seed, size)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local base = block_base(seed)
  local left, i = size, 0
  while left > 0 do
    local b = block(base, i)
    if left < BLOCK then b = b:sub(1, left) end
    local ok, werr = f:write(b)
    if not ok then f:close(); os.remove(tmp); return nil, werr end
    left = left - #b
    i = i + 1
  end
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then return nil, rerr end
  return true
end

--- The bytes a result file holds from offset (0-based), length bytes: what M.generate_file wrote.
function M.file_bytes(seed, size, offset, length)
  offset = offset or 0
  length = min(length or size, size - offset)
  local base = block_base(seed)
  local out, pos = {}, offset
  local stop = offset + length
  while pos < stop do
    local i = floor(pos / BLOCK)
    local b = block(base, i)
    local from = pos - i * BLOCK
    local to = min(BLOCK, stop - i * BLOCK)
    out[#out + 1] = b:sub(from + 1, to)
    pos = i * BLOCK + to
  end
  return concat(out)
end

local function decode_json(s)
  if not cjson_safe then return nil, "no JSON decoder (lua-cjson)" end
  local ok, v = pcall(cjson_safe.decode, s)
  if not ok then return nil, tostring(v) end
  return v
end
M.decode_json = decode_json

-- "bytes=a-b" -> first, last (0-based, inclusive), or false when unsatisfiable, nil when absent
-- or not understood (then the whole file is served).
local function parse_range(value, size)
  if not value then return nil end
  local a, b = value:match("^%s*bytes%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end
  local first, last
  if a == "" then
    local n = tonumber(b)
    if n == 0 then return false end
    first, last = max(0, size - n), size - 1
  else
    first = tonumber(a)
    last = b ~= "" and tonumber(b) or size - 1
    if first >= size then return false end
    if last < first then return nil end
    last = min(last, size - 1)
  end
  return first, last
end
M.parse_range = parse_range

-- Multipart parsing: every part of a multipart/form-data body as {name=, filename=,
-- content_type=, size=, data=} in order, or nil, reason.
local function multipart_parts(headers, body)
  local ct = headers["content-type"] or ""
  if not ct:lower():match("^%s*multipart/form%-data") then return nil, "not multipart/form-data" end
  local boundary = ct:match("[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=\"([^\"]+)\"") or ct:match("[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  if not boundary then return nil, "multipart without a boundary" end
  body = body or ""
  local delim = "--" .. boundary
  local pos = body:find(delim, 1, true)
  if not pos then return nil, "multipart body without its boundary" end
  local parts = {}
  while true do
    local after = pos + #delim
    if body:sub(after, after + 1) == "--" then break end -- closing delimiter
    local hstart = body:find("\r\n", after, true)
    if not hstart then return nil, "truncated multipart body" end
    local hend = body:find("\r\n\r\n", hstart, true)
    if not hend then return nil, "truncated multipart part headers" end
    local head = body:sub(hstart + 2, hend - 1)
    local nextpos = body:find("\r\n" .. delim, hend + 4, true)
    if not nextpos then return nil, "truncated multipart body (no closing boundary)" end
    local disp = head:match("[Cc]ontent%-[Dd]isposition:%s*([^\r\n]*)") or ""
    parts[#parts + 1] = {
      name = disp:match('[%s;]name="([^"]*)"') or disp:match("[%s;]name=([^;%s]+)"),
      filename = disp:match('filename="([^"]*)"') or disp:match("filename=([^;%s]+)"),
      content_type = head:match("[Cc]ontent%-[Tt]ype:%s*([^\r\n]*)"),
      size = nextpos - (hend + 4),
      data = body:sub(hend + 4, nextpos - 1),
    }
    pos = nextpos + 2
  end
  return parts
end
M.multipart_parts = multipart_parts

-- A simple checksum of a string (Adler-32 as a hex string), for the log's record of uploads.
local function adler32(s)
  local a, b = 1, 0
  local byte = string.byte
  for i = 1, #s, 4096 do
    local chunk = { byte(s, i, math.min(i + 4095, #s)) }
    for j = 1, #chunk do
      a = (a + chunk[j]) % 65521
      b = (b + a) % 65521
    end
  end
  return string.format("%08x", b * 65536 + a)
end
M.adler32 = adler32

-- The part named `field` that carries a filename: {name=, filename=, size=, content_type=,
-- data=}, or nil, reason.
local function multipart_file(headers, body, field)
  local parts, err = multipart_parts(headers, body)
  if not parts then return nil, err end
  for _, p in ipairs(parts) do
    if p.name == field and p.filename then return p end
  end
  return nil, "no file part named '" .. field .. "'"
end
M.multipart_file = multipart_file

local Model = {}
Model.__index = Model

--- opts: clock (function -> seconds; default os.time), files_dir (where result files are made;
--- a new temporary folder when nil), base_url (prefix of file links; "http://fake.invalid"),
--- keys (set of valid API keys; default test-key and other-key), link_ttl (seconds a file link
--- lives; 300), balance (Tripo balance; 3000), sellerpic_total (SellerPic credits; 1000).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Model)
  self.clock = opts.clock or os.time
  self.files_dir = opts.files_dir
  self.base_url = (opts.base_url or "http://fake.invalid"):gsub("/+$", "")
  self.keys = opts.keys or { ["test-key"] = true, ["other-key"] = true }
  self.link_ttl = opts.link_ttl or 300
  self.balance = opts.balance or 3000
  self.sellerpic_total = opts.sellerpic_total or 1000
  self.log = {}
  self:reset()
  return self
end

--- Forgets every task, link and log entry (the log table is emptied in place); keeps files on disk.
function Model:reset()
  self.tasks = {}
  self.results = {} -- SellerPic result id -> {task=, index=}
  self.links = {}   -- token -> {task_id=, key=, filename=, expires=}
  self.offset = 0
  self.counter = 0
  self.trace_counter = 0
  self.sellerpic_used = 0
  for i = #self.log, 1, -1 do self.log[i] = nil end
end

function Model:now()
  return self.clock() + self.offset
end

--- Moves the model's clock forward by s seconds (for hosts whose clock is real time).
function Model:advance(s)
  self.offset = self.offset + (tonumber(s) or 0)
end

function Model:get_files_dir()
  if not self.files_dir then
    local p = io.popen("mktemp -d /tmp/taskapi-fake-files.XXXXXX")
    local d = p and p:read("*l")
    if p then p:close() end
    self.files_dir = d or ("/tmp/taskapi-fake-files-" .. tostring(os.time()))
  end
  if not self.files_dir_made then
    mkdir_p(self.files_dir)
    self.files_dir_made = true
  end
  return self.files_dir
end

local function next_count(self)
  self.counter = self.counter + 1
  return self.counter
end

function Model:trace_id()
  self.trace_counter = self.trace_counter + 1
  return format("fake-trace-%08x%08x", floor(self:now()) % 4294967296, self.trace_counter)
end

local function tripo_id(n)
  return format("7f3a9c1e-%04x-4%03x-a%03x-%012x", n % 65536, n % 4096, (n * 7) % 4096, n)
end

local function sellerpic_id(prefix, n)
  -- 19 digits, far above 2^53: neighbours differ in their last digits only, which a double
  -- cannot tell apart.
  return prefix .. format("%011d", n)
end

local function norm_final_tripo(v)
  v = tostring(v or "success"):lower()
  if v == "succeeded" then v = "success" end
  if v == "canceled" then v = "cancelled" end
  return v
end

local function norm_final_sellerpic(v)
  v = tostring(v or "success"):upper()
  if v == "SUCCESS" or v == "SUCCEEDED" then return "SUCCESS" end
  if v == "FAILED" or v == "FAILURE" then return "FAILED" end
  return "FAILED"
end

local function is_array(t)
  return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

--- Adds a scripted task (the same as POST /_fake/tasks). Returns its id (a string) or nil, err.
--- spec: provider ("tripo" | "sellerpic"; "tripo"), id, owner_key ("test-key"), type,
--- queue (seconds queued; 1), run (seconds running; 2), final, error_code, status_value,
--- outputs (Tripo names, or {name = ext}), multiview, results (SellerPic count; 1),
--- result_states, file_size (2048), content_type, numeric_ids, eta_noise, input,
--- faults = {...} (names in M.FAULTS; they may also sit at the spec's top level).
function Model:add_task(spec)
  if type(spec) ~= "table" then return nil, "a task spec must be a table" end
  local provider = spec.provider or "tripo"
  if provider ~= "tripo" and provider ~= "sellerpic" then
    return nil, "unknown provider '" .. tostring(provider) .. "'"
  end
  local n = next_count(self)
  local id
  if not is_null(spec.id) then
    id = type(spec.id) == "number" and format("%.0f", spec.id) or tostring(spec.id)
    if math.type and math.type(spec.id) == "integer" then id = format("%d", spec.id) end
  elseif provider == "tripo" then
    id = tripo_id(n)
  else
    id = sellerpic_id("18692547", n)
  end
  if id == "" or id:find("[/%s?#]") then return nil, "a task id must not be empty nor hold / ? # or spaces" end
  if self.tasks[id] then return nil, "task " .. id .. " already exists" end
  local function num(v, default)
    v = tonumber(v)
    if v == nil then return default end
    return v
  end
  local t = {
    id = id,
    provider = provider,
    owner_key = (not is_null(spec.owner_key)) and tostring(spec.owner_key) or "test-key",
    queue = max(0, num(spec.queue, 1)),
    run = max(0, num(spec.run, 2)),
    created = self:now(),
    file_size = floor(max(0, num(spec.file_size, 2048))),
    content_type = (not is_null(spec.content_type)) and spec.content_type or nil,
    status_value = (not is_null(spec.status_value)) and tostring(spec.status_value) or nil,
    error_code = (not is_null(spec.error_code)) and spec.error_code or nil,
    eta_noise = floor(num(spec.eta_noise, 0)),
    numeric_ids = spec.numeric_ids == true,
    input = type(spec.input) == "table" and copy(spec.input) or {},
    spec = copy(spec),
    polls = 0,
    files = {},       -- key -> {key=, filename=, content_type=, size=, seed=}
    first_get = {},   -- key -> true once the file host served one GET of it
    stalls = 0,
  }
  -- faults: spec.faults, completed by the same names at the top level
  local faults = {}
  if type(spec.faults) == "table" then faults = copy(spec.faults) end
  for _, name in ipairs(M.FAULTS) do
    if faults[name] == nil and spec[name] ~= nil then faults[name] = copy(spec[name]) end
  end
  for k, v in pairs(faults) do if is_null(v) then faults[k] = nil end end
  if type(faults.rate_limit) == "number" then faults.rate_limit = { count = faults.rate_limit } end
  if type(faults.code_under_200) == "number" then faults.code_under_200 = { count = faults.code_under_200 } end
  t.faults = faults

  if provider == "tripo" then
    t.type = (not is_null(spec.type)) and tostring(spec.type) or "text_to_model"
    t.final = norm_final_tripo(spec.final)
    local outputs = {} -- array of {name=, ext=}
    local so = spec.outputs
    if is_null(so) then so = { "model", "rendered_image" } end
    if type(so) ~= "table" then return nil, "outputs must be a list of names or a {name = ext} table" end
    if is_array(so) then
      for _, name in ipairs(so) do
        outputs[#outputs + 1] = { name = tostring(name), ext = TRIPO_OUTPUT_EXT[tostring(name)] or "bin" }
      end
    else
      local names = {}
      for name in pairs(so) do names[#names + 1] = tostring(name) end
      table.sort(names)
      for _, name in ipairs(names) do
        outputs[#outputs + 1] = { name = name, ext = tostring(so[name]) }
      end
    end
    t.outputs = outputs
    t.multiview = spec.multiview == true
  else
    t.type = (not is_null(spec.type)) and tostring(spec.type) or "instructEdit"
    t.final = norm_final_sellerpic(spec.final)
    t.video = spec.kind == "video" or t.type == "imageToVideo"
    local states = type(spec.result_states) == "table" and spec.result_states or nil
    local count = floor(num(spec.results, states and #states or 1))
    t.results = {}
    for i = 1, count do
      local rid = sellerpic_id("19102568", next_count(self))
      local state = states and states[i] and tostring(states[i]):upper() or t.final
      t.results[i] = { id = rid, state = state }
      self.results[rid] = { task = t, index = i }
    end
  end
  self.tasks[id] = t
  return id
end

--- The internal record of a task (for specs and debugging).
function Model:task(id)
  return self.tasks[tostring(id)]
end

-- "queued" | "running" | "final", seconds since creation
function Model:phase(t, now)
  local e = (now or self:now()) - t.created
  if e < t.queue then return "queued", e end
  if e < t.queue + t.run then return "running", e end
  return "final", e
end

----------------------------------------------------------------------------------------------
-- responses

local function json_resp(status, value, headers)
  local body, err = json.encode(value)
  if not body then
    status, body = 500, '{"error":"fake: cannot encode the answer: ' .. tostring(err) .. '"}'
  end
  headers = headers or {}
  headers["Content-Type"] = headers["Content-Type"] or "application/json"
  return { status = status, headers = headers, body = body }
end

function Model:tripo(status, data_or_code, message, suggestion, headers)
  headers = headers or {}
  headers["X-Tripo-Trace-ID"] = self:trace_id()
  if status >= 200 and status < 300 and message == nil then
    return json_resp(status, { code = 0, data = data_or_code }, headers)
  end
  return json_resp(status, { code = data_or_code, message = message, suggestion = suggestion or "" }, headers)
end

function Model:sellerpic(status, data, code, msg, headers)
  code = code or 0
  local body = {
    code = code,
    data = data == nil and json.null or data,
    msg = msg or (code == 0 and "success" or "error"),
    success = code == 0,
    traceId = self:trace_id(),
  }
  return json_resp(status, body, headers)
end

local function text_resp(status, body, ctype, headers)
  headers = headers or {}
  headers["Content-Type"] = ctype or "text/plain"
  return { status = status, headers = headers, body = body }
end

local HTML_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" ..
  "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>fake-gateway</center>\r\n</body>\r\n</html>\r\n"

-- The fault (if any) that answers this API request about task t; counts it down.
function Model:api_fault(t, ctx, provider)
  local f = t.faults
  local function take(name)
    local v = f[name]
    local n = type(v) == "table" and tonumber(v.count or 1) or tonumber(v)
    if n and n > 0 then
      if type(v) == "table" then v.count = n - 1 else f[name] = n - 1 end
      return true, v
    end
    return false
  end
  if take("server_errors") then
    if provider == "tripo" then
      return self:tripo(500, 1000, "Internal server error", "Retry later")
    end
    return self:sellerpic(500, nil, 500, "Internal Server Error")
  end
  local hit, rl = take("rate_limit")
  if hit then
    local after = tonumber(rl.retry_after) or 1
    local headers = { ["Retry-After"] = rl.as_date and http_date(ceil(ctx.now + after)) or tostring(floor(after)) }
    if provider == "tripo" then
      return self:tripo(429, tonumber(rl.code) or 2000, "You have exceeded the limit of generation",
        "Try again later", headers)
    end
    return self:sellerpic(429, nil, tonumber(rl.code) or 429, "Too Many Requests", headers)
  end
  if take("html_error") then
    local r = text_resp(502, HTML_502, "text/html")
    if provider == "tripo" then r.headers["X-Tripo-Trace-ID"] = self:trace_id() end
    return r
  end
  if take("malformed_json") then
    return "malformed"
  end
  local c2, cv = take("code_under_200")
  if c2 then
    local code = tonumber(cv.code) or (provider == "tripo" and 1000 or 500)
    local msg = cv.msg or cv.message or "internal error"
    if provider == "tripo" then return self:tripo(200, code, msg, "Retry later") end
    return self:sellerpic(200, nil, code, msg)
  end
  return nil
end

local function truncate(resp)
  local b = resp.body
  resp.body = b:sub(1, max(1, floor(#b / 2)))
  return resp
end

local function apply_shape(data, shape)
  if not shape then return data, true end
  if shape == "missing" then return nil, false end
  if shape == "array" then return json.array({}), true end
  if shape == "null" then return json.null, true end
  if shape == "number" then return 42, true end
  return "unexpected", true -- true or "string"
end

----------------------------------------------------------------------------------------------
-- links and files

local function safe_name(s)
  return (tostring(s):gsub("[^%w%-_.]", "_"))
end

-- Registers the file of task t under key; returns its record. A task whose spec gives no
-- file_size gets the real media file of the output's type (taskapi.fake.media: png, jpg, webp,
-- gif, glb, gltf, obj, mp4; a SellerPic video asked as webp gets the animated WebP), with
-- "taskapi-fake <id> <key>" in its metadata: {media = name, tag =, size = its length}; one
-- with a file_size, or of a type
-- media has no file for (fbx, usdz, bin...), gets the deterministic filler of that size (2048
-- by default): {seed =, size =}. M.record_bytes(rec) gives the bytes of either.
function Model:file_record(t, key, filename, ext)
  local rec = t.files[key]
  if not rec then
    ext = ext and tostring(ext):lower()
    rec = {
      key = key,
      filename = filename,
      content_type = t.content_type or CONTENT_TYPES[ext] or "application/octet-stream",
    }
    local seed = "taskapi-fake " .. t.id .. " " .. key
    if is_null(t.spec and t.spec.file_size) and media.has(ext) then
      rec.media = (t.video and ext == "webp") and "webp_animated" or ext -- a video as WebP moves
      rec.tag = seed -- in the file's comment or metadata: each task's file is its own
      rec.size = #media.bytes(rec.media, rec.tag)
    else
      rec.size = t.file_size
      rec.seed = seed
    end
    t.files[key] = rec
  end
  return rec
end

function Model:issue_link(t, ctx, key, filename, ext)
  self:file_record(t, key, filename, ext)
  local expires = ctx.now + self.link_ttl
  local f = t.faults
  if tonumber(f.expired_links) and f.expired_links > 0 then
    f.expired_links = f.expired_links - 1
    expires = ctx.now - 1
  end
  local n = next_count(self)
  local token = format("%x%06x", (n * 2654435761) % 4294967296, n)
  self.links[token] = { task_id = t.id, key = key, filename = filename, expires = expires }
  return ctx.base .. "/files/" .. token .. "/" .. filename
end

-- Writes bytes to path unless a file of that size is there (through a temporary name).
local function write_once(path, bytes)
  if file_size(path) == #bytes then return true end
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(bytes)
  f:close()
  if not ok then os.remove(tmp); return nil, werr end
  return os.rename(tmp, path)
end

--- The path of a result file of a task, made on first need (one file per task and key): the
--- filler in 64 KiB chunks, or the media file with the record's tag.
function Model:file_path(t, key)
  if type(t) ~= "table" then t = self.tasks[tostring(t)] end
  local rec = t and t.files[key]
  if not rec then return nil, "no such file" end
  if rec.media then
    local path = self:get_files_dir() .. "/" .. safe_name(t.id) .. "-" .. safe_name(key) .. "-" ..
      media.file_name(rec.media)
    local ok, err = write_once(path, media.bytes(rec.media, rec.tag))
    if not ok then return nil, err end
    return path, rec
  end
  local path = self:get_files_dir() .. "/" .. safe_name(t.id) .. "-" .. safe_name(key) .. "-" .. rec.size
  if file_size(path) ~= rec.size then
    local ok, err = M.generate_file(path, rec.seed, rec.size)
    if not ok then return nil, err end
  end
  return path, rec
end

--- The record of a result file (for specs): {key=, filename=, content_type=, size=, and seed=
--- (filler) or media= and tag= (a real file of that type, the tag in its metadata)}; nil
--- before its link was issued.
function Model:file_info(task_id, key)
  local t = self.tasks[tostring(task_id)]
  return t and t.files[key]
end

-- GET /_fake/tasks/{id}/files: the task's file records, key -> record (see file_info).
function Model:file_records(task_id)
  local t = self.tasks[tostring(task_id)]
  if not t then return json_resp(404, { error = "no such task" }) end
  return json_resp(200, t.files)
end

--- The bytes a file record stands for, from offset (0-based), length bytes (the whole file by
--- default): the media file or the filler. rec may be a decoded copy (GET
--- /_fake/tasks/{id}/files answers a task's records, key -> record).
function M.record_bytes(rec, offset, length)
  if rec.media then
    local b = media.bytes(rec.media, rec.tag)
    offset = offset or 0
    return b:sub(offset + 1, offset + (length or #b))
  end
  return M.file_bytes(rec.seed, rec.size, offset, length)
end

local EXPIRED_XML = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>' ..
  "<Message>Request has expired</Message></Error>\n"

function Model:serve_file(ctx, token, name)
  local method = ctx.method
  if method ~= "GET" and method ~= "HEAD" then
    return text_resp(405, "method not allowed\n", "text/plain", { Allow = "GET, HEAD" })
  end
  local link = self.links[token]
  if not link or link.filename ~= name then
    return text_resp(403, EXPIRED_XML:gsub("Request has expired", "Access Denied"), "application/xml")
  end
  if ctx.now >= link.expires then
    return text_resp(403, EXPIRED_XML, "application/xml")
  end
  local t = self.tasks[link.task_id]
  if not t then return text_resp(403, EXPIRED_XML, "application/xml") end
  local path, rec = self:file_path(t, link.key)
  if not path then return text_resp(500, "fake: cannot make the file: " .. tostring(rec) .. "\n") end
  local size = rec.size
  local f = t.faults
  local headers = {
    ["Content-Type"] = rec.content_type,
    ["Accept-Ranges"] = "bytes",
    ["Last-Modified"] = http_date(t.created),
    ["ETag"] = '"' .. safe_name(link.key) .. "-" .. size .. '"',
  }
  local resp = { status = 200, headers = headers, file = path, offset = 0, length = size, plain = true }
  if method == "HEAD" then resp.head = true end
  if not is_null(f.filename) then
    headers["Content-Disposition"] = 'attachment; filename="' .. tostring(f.filename) .. '"'
    resp.plain = false
  end
  local first, last = parse_range(ctx.headers.range, size)
  if f.ignore_range then
    resp.plain = false
    resp.ignored_range = ctx.headers.range ~= nil
  elseif first == false then
    return text_resp(416, "range not satisfiable\n", "text/plain", { ["Content-Range"] = "bytes */" .. size })
  elseif first then
    resp.status = 206
    resp.offset, resp.length = first, last - first + 1
    headers["Content-Range"] = format("bytes %d-%d/%d", first, last, size)
  end
  headers["Content-Length"] = tostring(resp.length)
  if method == "GET" then
    local frac = tonumber(f.drop_download)
    if frac and not t.first_get[link.key] then
      resp.drop_after = max(0, min(resp.length - 1, floor(resp.length * frac)))
      resp.plain = false
    end
    t.first_get[link.key] = true
    if f.lie_length then
      headers["Content-Length"] = tostring(resp.length + 4096)
      resp.lie_length = true
      resp.plain = false
    end
    local stall = tonumber(f.stall)
    if stall and stall > 0 and (f.stall_count == nil or (tonumber(f.stall_count) or 0) > t.stalls) then
      t.stalls = t.stalls + 1
      resp.stall = stall
      resp.stall_after = floor(resp.length / 2)
      resp.plain = false
    end
  end
  return resp
end

----------------------------------------------------------------------------------------------
-- Tripo

function Model:tripo_data(t, ctx)
  local phase, e = self:phase(t, ctx.now)
  local data = {
    task_id = t.id, type = t.type, status = "queued", input = t.input, output = {},
    progress = 0, consumed_credit = 0, queuing_num = -1, running_left_time = -1,
    create_time = floor(t.created),
  }
  if phase == "queued" then
    data.queuing_num = max(1, ceil(t.queue - e))
  elseif phase == "running" then
    data.status = "running"
    data.progress = max(0, min(99, floor(100 * (e - t.queue) / t.run)))
    local left = ceil(t.queue + t.run - e)
    if t.eta_noise > 0 then
      local span = 2 * t.eta_noise + 1
      left = left + ((t.polls * 7919 + #t.id * 31) % span) - t.eta_noise
    end
    data.running_left_time = max(0, left)
  else
    data.status = t.status_value or t.final
    data.progress = 100
    if data.status == "success" then
      data.consumed_credit = 20
      for _, o in ipairs(t.outputs) do
        data.output[o.name] = self:issue_link(t, ctx, o.name, o.name .. "." .. o.ext, o.ext)
      end
      if t.multiview then
        local mv = {}
        for _, v in ipairs(VIEWS) do
          local view = v:match("^(%a+)_")
          local key = "generate_multiview_image." .. view
          mv[v] = self:issue_link(t, ctx, key, view .. ".png", "png")
        end
        data.output.generate_multiview_image = mv
      end
    elseif data.status == "failed" then
      data.error_code = t.error_code or 1001
    elseif data.status == "banned" then
      data.error_code = t.error_code or 2008
    elseif t.error_code then
      data.error_code = t.error_code
    end
  end
  return data
end

-- A status read of task t, shared by both providers: the task's faults, its poll count, its
-- data (data_of(self, t, ctx)) in the provider's envelope (wrap(self, data)), or an envelope
-- without data under the wrong_shape fault (bare()), a truncated body, a delay.
function Model:status_reply(t, ctx, data_of, wrap, bare)
  local fault = self:api_fault(t, ctx, t.provider)
  if fault and fault ~= "malformed" then return fault end
  t.polls = t.polls + 1
  local data, present = apply_shape(data_of(self, t, ctx), t.faults.wrong_shape)
  local resp
  if present then resp = wrap(self, data) else resp = bare(self) end
  if fault == "malformed" then truncate(resp) end
  local delay = tonumber(t.faults.delay)
  if delay and delay > 0 then resp.delay = delay end
  return resp
end

local function tripo_ok(self, data) return self:tripo(200, data) end
local function tripo_bare(self) return json_resp(200, { code = 0 }, { ["X-Tripo-Trace-ID"] = self:trace_id() }) end

function Model:tripo_status(ctx, id)
  local t = self.tasks[id]
  if not t or t.provider ~= "tripo" or t.owner_key ~= ctx.key then
    return self:tripo(404, 2001, "task not found", "Check the task id and the API key that created it")
  end
  return self:status_reply(t, ctx, Model.tripo_data, tripo_ok, tripo_bare)
end

function Model:tripo_create(ctx)
  local body, err = decode_json(ctx.body or "")
  if type(body) ~= "table" then
    return self:tripo(400, 1003, "malformed request body: " .. tostring(err or "not an object"), "Send a JSON object")
  end
  if type(body.type) ~= "string" or body.type == "" then
    return self:tripo(400, 1004, "invalid parameter: type is required", "Set the task type")
  end
  local spec = type(body.fake) == "table" and copy(body.fake) or {}
  spec.provider = "tripo"
  spec.type = body.type
  if is_null(spec.owner_key) then spec.owner_key = ctx.key end
  local input = {}
  for k, v in pairs(body) do if k ~= "fake" then input[k] = v end end
  spec.input = input
  local id, aerr = self:add_task(spec)
  if not id then return self:tripo(400, 1004, "invalid parameter: " .. aerr, "Check the fake task spec") end
  return self:tripo(200, { task_id = id })
end

-- The uploaded file part (multipart field "file"); recorded in the request's log entry as
-- upload = {filename=, content_type=, size=, adler32=} so specs can check the bytes arrived.
function Model:upload_part(ctx)
  local part, err = multipart_file(ctx.headers, ctx.body, "file")
  if part and ctx.log then
    ctx.log.upload = { filename = part.filename, content_type = part.content_type, size = part.size,
      adler32 = adler32(part.data) }
  end
  return part, err
end

function Model:route_tripo(ctx)
  local p, m = ctx.path:sub(#TRIPO + 1), ctx.method
  local id = p:match("^/task/([^/]+)$")
  if id and m == "GET" then return self:tripo_status(ctx, id) end
  if p == "/task" and m == "POST" then return self:tripo_create(ctx) end
  if p == "/user/balance" and m == "GET" then
    return self:tripo(200, { balance = self.balance, frozen = 0 })
  end
  if p == "/upload" and m == "POST" then
    local part, err = self:upload_part(ctx)
    if not part then return self:tripo(400, 1003, "malformed request: " .. err, "Send the image as multipart field 'file'") end
    local n = next_count(self)
    return self:tripo(200, { image_token = tripo_id(n + 1000000) })
  end
  if id or p == "/task" or p == "/user/balance" or p == "/upload" then
    return self:tripo(405, 1004, "method not allowed", "")
  end
  return self:tripo(404, 1004, "no such endpoint: " .. ctx.path, "Check the base URL")
end

----------------------------------------------------------------------------------------------
-- SellerPic

function Model:sellerpic_id_value(t, id)
  if t.numeric_ids then return json.raw(id) end
  return id
end

function Model:sellerpic_ext(t)
  return t.video and "mp4" or "png"
end

function Model:sellerpic_data(t, ctx)
  local phase = self:phase(t, ctx.now)
  local list = json.array({})
  for _, r in ipairs(t.results) do
    local e = {
      id = self:sellerpic_id_value(t, r.id), fileUrl = "", status = "CREATED",
      errorCode = json.null, errorMsg = json.null,
    }
    if phase == "running" then
      e.status = "RUNNING"
    elseif phase == "final" then
      e.status = t.status_value or r.state
      if e.status == "SUCCESS" then
        local ext = self:sellerpic_ext(t)
        e.fileUrl = self:issue_link(t, ctx, r.id .. "." .. ext, r.id .. "." .. ext, ext)
      elseif e.status == "FAILED" then
        e.errorCode = t.error_code or 50001
        e.errorMsg = "generation failed"
      end
    end
    list[#list + 1] = e
  end
  return { resultList = list }
end

local function sp_not_found(self)
  return self:sellerpic(404, nil, 404, "Record Not Found")
end

local function sellerpic_ok(self, data) return self:sellerpic(200, data) end
local function sellerpic_bare(self)
  return json_resp(200, { code = 0, msg = "success", success = true, traceId = self:trace_id() })
end

function Model:sellerpic_status(ctx)
  local id = ctx.query.id
  if is_null(id) or id == "" then return self:sellerpic(400, nil, 400, "id is required") end
  local t = self.tasks[tostring(id)]
  if not t or t.provider ~= "sellerpic" or t.owner_key ~= ctx.key then return sp_not_found(self) end
  return self:status_reply(t, ctx, Model.sellerpic_data, sellerpic_ok, sellerpic_bare)
end

function Model:sellerpic_download(ctx)
  local rid = ctx.query.id
  if is_null(rid) or rid == "" then return self:sellerpic(400, nil, 400, "id is required") end
  local ref = self.results[tostring(rid)]
  if not ref or ref.task.owner_key ~= ctx.key then return sp_not_found(self) end
  local t, r = ref.task, ref.task.results[ref.index]
  local fault = self:api_fault(t, ctx, "sellerpic")
  if fault and fault ~= "malformed" then return fault end
  local fmt = ctx.query.downloadFormat
  if is_null(fmt) or fmt == "" then fmt = self:sellerpic_ext(t) end
  fmt = tostring(fmt):lower()
  local allowed = t.video and VIDEO_FORMATS or IMAGE_FORMATS
  if not allowed[fmt] then
    return self:sellerpic(400, nil, 400, "invalid downloadFormat '" .. fmt .. "'")
  end
  local phase = self:phase(t, ctx.now)
  local state = phase == "final" and (t.status_value or r.state) or (phase == "running" and "RUNNING" or "CREATED")
  local name = r.id .. "." .. fmt
  local data = { name = name, status = state, fileUrl = json.null, errorMsg = json.null }
  if state == "SUCCESS" then
    data.fileUrl = self:issue_link(t, ctx, name, name, fmt)
  else
    data.errorMsg = state == "FAILED" and "generation failed" or "the result is not ready"
  end
  local resp = self:sellerpic(200, data)
  if fault == "malformed" then truncate(resp) end
  return resp
end

function Model:sellerpic_create(ctx, typ)
  local body = {}
  if ctx.body and ctx.body:match("%S") then
    local b, err = decode_json(ctx.body)
    if type(b) ~= "table" then return self:sellerpic(400, nil, 400, "malformed request body: " .. tostring(err)) end
    body = b
  end
  local spec = type(body.fake) == "table" and copy(body.fake) or {}
  spec.provider = "sellerpic"
  spec.type = typ
  if is_null(spec.owner_key) then spec.owner_key = ctx.key end
  local input = {}
  for k, v in pairs(body) do if k ~= "fake" then input[k] = v end end
  spec.input = input
  local id, err = self:add_task(spec)
  if not id then return self:sellerpic(400, nil, 400, "invalid parameter: " .. err) end
  self.sellerpic_used = self.sellerpic_used + 1
  local t = self.tasks[id]
  return self:sellerpic(200, { id = self:sellerpic_id_value(t, id) })
end

function Model:route_sellerpic(ctx)
  local p, m = ctx.path:sub(#SP + 1), ctx.method
  if p == "/generate" and m == "GET" then return self:sellerpic_status(ctx) end
  local typ = p:match("^/generate/([^/]+)$")
  if typ and m == "POST" then return self:sellerpic_create(ctx, typ) end
  if p == "/download" and m == "GET" then return self:sellerpic_download(ctx) end
  if p == "/usage" and m == "GET" then
    local total = self.sellerpic_total
    return self:sellerpic(200, { remaining = total - self.sellerpic_used, total = total, usage = self.sellerpic_used })
  end
  if p == "/upload" and m == "POST" then
    local part, err = self:upload_part(ctx)
    if not part then return self:sellerpic(400, nil, 400, "malformed request: " .. err) end
    local n = next_count(self)
    return self:sellerpic(200, { fileKey = "UPLOAD/" .. sellerpic_id("19102568", n) .. "/" .. safe_name(part.filename) })
  end
  return self:sellerpic(404, nil, 404, "no such endpoint: " .. ctx.path)
end

----------------------------------------------------------------------------------------------
-- control routes (/_fake/...)

local function log_json(self)
  local out = json.array({})
  for i, e in ipairs(self.log) do
    out[i] = { method = e.method, path = e.path, query = e.query, headers = e.headers, time = e.time,
      authorization = e.authorization, key = e.key, upload = e.upload }
  end
  return out
end

function Model:route_control(ctx)
  local p, m = ctx.path, ctx.method
  if m == "GET" and p:match("^/_fake/tasks/[^/]+/files$") then return self:file_records(p:match("^/_fake/tasks/([^/]+)")) end
  if p == "/_fake/tasks" and m == "POST" then
    local spec, err = decode_json(ctx.body or "")
    if type(spec) ~= "table" then
      return json_resp(400, { error = "the body must be a JSON task spec: " .. tostring(err or "not an object") })
    end
    local id, aerr = self:add_task(spec)
    if not id then return json_resp(400, { error = aerr }) end
    return json_resp(200, { id = id })
  end
  if p == "/_fake/log" and m == "GET" then return json_resp(200, log_json(self)) end
  if p == "/_fake/reset" and m == "POST" then self:reset(); return json_resp(200, { ok = true }) end
  if p == "/_fake/advance" and m == "POST" then
    local s = tonumber(ctx.query.seconds)
    if not s then return json_resp(400, { error = "seconds=N is required" }) end
    self:advance(s)
    return json_resp(200, { ok = true, offset = self.offset })
  end
  local id = p:match("^/_fake/tasks/([^/]+)$")
  if id and m == "GET" then
    local t = self.tasks[id]
    if not t then return json_resp(404, { error = "no such task" }) end
    local phase = self:phase(t, ctx.now)
    return json_resp(200, { id = t.id, provider = t.provider, owner_key = t.owner_key, phase = phase,
      polls = t.polls, spec = t.spec })
  end
  return json_resp(404, { error = "no such control route: " .. m .. " " .. p })
end

----------------------------------------------------------------------------------------------

local function bearer(headers)
  local auth = headers.authorization
  if type(auth) ~= "string" then return nil, false end
  return auth:match("^%s*[Bb]earer%s+(%S+)%s*$"), true
end

--- Answers one request (see the top of this file for the shapes).
function Model:handle(req)
  local headers = {}
  for k, v in pairs(req.headers or {}) do headers[tostring(k):lower()] = v end
  local ctx = {
    method = tostring(req.method or "GET"):upper(),
    path = req.path or "/",
    query = req.query or {},
    headers = headers,
    body = req.body,
    base = (req.base_url or self.base_url):gsub("/+$", ""),
    now = self:now(),
  }
  local key, has_auth = bearer(headers)
  ctx.key = key
  local p = ctx.path
  if p:sub(1, 7) == "/_fake/" then return self:route_control(ctx) end

  local logged = {}
  for k, v in pairs(headers) do if k ~= "authorization" then logged[k] = v end end
  ctx.log = {
    method = ctx.method, path = p, query = copy(ctx.query), headers = logged, time = ctx.now,
    authorization = has_auth, key = key,
  }
  self.log[#self.log + 1] = ctx.log

  local token, name = p:match("^/files/([^/]+)/([^/]+)$")
  if token then return self:serve_file(ctx, token, name) end

  if p:sub(1, #TRIPO + 1) == TRIPO .. "/" then
    if not key or not self.keys[key] then
      return self:tripo(401, 1002, "Authentication failed", "Check your API key (and its region)")
    end
    return self:route_tripo(ctx)
  end
  if p:sub(1, #SP + 1) == SP .. "/" then
    if not key or not self.keys[key] then
      return self:sellerpic(401, nil, 401, "Unauthorized")
    end
    return self:route_sellerpic(ctx)
  end
  if p:sub(1, 7) == "/files/" then
    return text_resp(403, EXPIRED_XML:gsub("Request has expired", "Access Denied"), "application/xml")
  end
  return text_resp(404, "not found\n")
end

M.Model = Model
return M
