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
local files = require "taskapi.util.files"
local media = require "taskapi.fake.media"

local M = {}

local ok_cjson, cjson = pcall(require, "cjson")
local private_cjson
if ok_cjson then
  private_cjson = cjson.new and cjson.new() or cjson
  if private_cjson.decode_max_depth then private_cjson.decode_max_depth(200) end
end

local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local format, concat = string.format, table.concat
local tostring, tonumber, type, pairs, ipairs = tostring, tonumber, type, pairs, ipairs

local TRIPO = "/tripo/v2/openapi"
local TRIPO3 = "/tripo/v3"
local SP = "/sellerpic/v1/api"

M.TRIPO_PREFIX = TRIPO
M.TRIPO_V2_PREFIX = TRIPO
M.TRIPO_V3_PREFIX = TRIPO3
M.SELLERPIC_PREFIX = "/sellerpic"

-- Tripo V3: one create endpoint per capability (under /tripo/v3) -> the task type it makes.
-- Tripo's SDKs show only "text_to_model" for V3; the others are the V2 type names of the
-- same capability (see doc/internals.md), so one task reads the same through both APIs.
M.V3_CREATES = {
  ["/generation/text-to-model"] = "text_to_model",
  ["/generation/image-to-model"] = "image_to_model",
  ["/generation/multiview-to-model"] = "multiview_to_model",
  ["/generation/text-to-image"] = "text_to_image",
  ["/generation/image-to-image"] = "generate_image",
  ["/generation/image-to-multiview"] = "generate_multiview_image",
  ["/generation/edit-multiview"] = "edit_multiview_image",
  ["/models/texture"] = "texture_model",
  ["/models/convert"] = "convert_model",
  ["/models/stylize"] = "stylize_model",
  ["/models/refine"] = "refine_model",
  ["/models/import"] = "import_model",
  ["/mesh/segment"] = "mesh_segmentation",
  ["/mesh/complete"] = "mesh_completion",
  ["/mesh/decimate"] = "highpoly_to_lowpoly",
  ["/animations/rig-check"] = "animate_prerigcheck",
  ["/animations/rig"] = "animate_rig",
  ["/animations/retarget"] = "animate_retarget",
}

-- The V3 endpoints that answer 400 / 1004 without model_version (or model).
M.V3_NEED_MODEL = {
  ["/generation/text-to-model"] = true,
  ["/generation/image-to-model"] = true,
  ["/generation/multiview-to-model"] = true,
}

-- What a Tripo task of a type makes when its spec names no outputs: "model" (a model file
-- and a rendered preview), "image" (one generated image), "multiview" (four views),
-- "rigcheck" (riggable + rig_type, no file), "rig" (a rigged model), "retarget" (animated
-- models: model_url and, in V3, model_urls).
local TRIPO_KIND = {
  text_to_image = "image", generate_image = "image", image_to_image = "image",
  generate_multiview_image = "multiview", edit_multiview_image = "multiview",
  image_to_multiview = "multiview", edit_multiview = "multiview",
  animate_prerigcheck = "rigcheck", rig_check = "rigcheck",
  animate_rig = "rig", rig = "rig",
  animate_retarget = "retarget", retarget = "retarget",
}
M.TRIPO_KIND = TRIPO_KIND

local KIND_OUTPUTS = {
  model = { "model", "rendered_image" }, image = { "generated_image" }, multiview = {}, rigcheck = {},
  rig = { "model" }, retarget = { "model" },
}

-- Files a V3 upload (POST /files, /files/presign) takes, by extension.
M.V3_FILE_FORMATS = {
  webp = "image", png = "image", jpeg = "image", jpg = "image", bmp = "image", tiff = "image", tif = "image",
  glb = "model", obj = "model", fbx = "model", stl = "model", ["3mf"] = "model", usdz = "model",
}

-- The keys every model knows (key -> owner): a tsk_ key is the same account as its plain name.
M.DEFAULT_KEYS = {
  ["test-key"] = "test-key", ["tsk_test-key"] = "test-key",
  ["other-key"] = "other-key", ["tsk_other-key"] = "other-key",
}

-- The providers /_fake/stats counts creates of: "tripo" (V3), "tripo-v2", "sellerpic".
M.CREATE_APIS = { "tripo", "tripo-v2", "sellerpic" }

-- Every fault the fake plays, in one table: {name, where it is set, what it does, the field
-- of the answer a host acts on}. Where: "task" (a task spec's `faults`, or its top level:
-- applied by this model to that task's reads and files) or "request" (POST /_fake/faults:
-- the next create or upload of a provider). The field: what the model puts in its answer
-- for the host to play (both hosts, fake/server.lua in nginx and fake/inprocess.lua, act on
-- it; spec/fake_model_spec.lua checks that they do); none: the model writes the whole
-- answer itself. A new fault is one entry here and its branch where the model answers.
M.FAULT_TABLE = {
  { "server_errors", "task", "the next n status reads answer 500 (code 1000)" },
  { "rate_limit", "task", "status reads answer 429 (code 2000) with Retry-After" },
  { "malformed_json", "task", "status reads answer a body that is not JSON" },
  { "html_error", "task", "status reads answer an HTML error page" },
  { "code_under_200", "task", "status reads answer an error code under HTTP 200" },
  { "delay", "task", "status answers come this many seconds late", "delay" },
  { "drop_download", "task", "the first GET of each file closes after this share of it", "drop_after" },
  { "expired_links", "task", "file links answer 403 until the task is read again" },
  { "ignore_range", "task", "the file host ignores Range (200 with the whole file)" },
  { "lie_length", "task", "Content-Length says 4096 bytes more than the body", "lie_length" },
  { "filename", "task", "files come with this Content-Disposition filename" },
  { "stall", "task", "files stop halfway for this many seconds", "stall" },
  { "stall_count", "task", "how many GETs stall (with stall)" },
  { "wrong_shape", "task", "status data in another shape" },
  { "status_408", "request", "answers 408" }, { "status_425", "request", "answers 425" },
  { "status_429", "request", "answers 429 with Retry-After (nothing made)" },
  { "status_500", "request", "answers 500" }, { "status_502", "request", "answers 502" },
  { "status_503", "request", "answers 503 (nothing made)" }, { "status_504", "request", "answers 504" },
  { "reset", "request", "closes the connection without an answer", "reset" },
  { "hang", "request", "answers after `seconds` (60)", "delay" },
  { "cut", "request", "answers a truncated body" },
  { "no_id", "request", "answers without the task id or file token" },
}

-- The names a task spec may carry in `faults` (or at its top level), from FAULT_TABLE.
M.FAULTS = {}
for _, f in ipairs(M.FAULT_TABLE) do
  if f[2] == "task" then M.FAULTS[#M.FAULTS + 1] = f[1] end
end

M.TRIPO_FINAL = { success = true, failed = true, banned = true, expired = true, cancelled = true, unknown = true }

local TRIPO_OUTPUT_EXT = {
  model = "glb", base_model = "glb", pbr_model = "glb",
  generated_image = "png", rendered_image = "webp", rendered_video = "mp4", multiview_basecolor = "png",
}

-- The model file format a create asked for, when its spec names no outputs: convert's
-- `format`, rig and retarget's `out_format`, or `quad = true` (FBX), as Tripo's SDKs say
-- ("quad forces FBX", "convertModel emits whichever format was requested"); nil: glb.
local MODEL_FORMATS = { glb = true, gltf = true, fbx = true, obj = true, stl = true, usdz = true, ["3mf"] = true }
local function requested_model_format(input)
  if type(input) ~= "table" then return nil end
  for _, k in ipairs({ "format", "out_format" }) do
    local v = type(input[k]) == "string" and input[k]:lower()
    if v and MODEL_FORMATS[v] then return v end
  end
  if input.quad == true then return "fbx" end
  return nil
end

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
  if not private_cjson then return nil, "no JSON decoder (lua-cjson)" end
  local ok, v = pcall(private_cjson.decode, s)
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

-- keys option -> {key = owner}: the defaults plus a list of keys, a set {key = true} or a
-- map {key = "owner"} (an owner is the account a key belongs to; true: the key itself).
local function key_owners(extra)
  local keys = {}
  for k, v in pairs(M.DEFAULT_KEYS) do keys[k] = v end
  if type(extra) == "string" then extra = { extra } end
  if type(extra) == "table" then
    for k, v in pairs(extra) do
      if type(k) == "number" then
        if type(v) == "string" and v ~= "" then keys[v] = keys[v] or v end
      elseif type(k) == "string" and k ~= "" and v then
        keys[k] = type(v) == "string" and v or k
      end
    end
  end
  return keys
end
M.key_owners = key_owners

--- opts: clock (function -> seconds; default os.time), files_dir (where result files are made;
--- a new temporary folder when nil), base_url (prefix of file links; "http://fake.invalid"),
--- keys (more valid API keys besides M.DEFAULT_KEYS: a list, a set, or {key = "owner"}),
--- link_ttl (seconds a file link lives; 300), balance (Tripo balance; 3000 in V2, 2987.5 in V3
--- when not given), sellerpic_total (SellerPic credits; 1000), and for Tripo V3:
--- v3_statuses (5: queued running success failed cancelled, banned and expired as failed with
--- error_code 2008 / 2018; or 8: the V2 list), v3_eta (false: no queuing_num nor
--- running_left_time; default true: each when known), list_shape ("array", the default:
--- POST /tasks/list answers tasks = [task, ...] in request order, as Tripo's JS, Go and Rust
--- SDKs read it; "map": tasks = {id = task}, as one migration guide shows it),
--- credits (credits_consumed of a V3 success; 12.5), presign_ttl (seconds an upload_url
--- lives; 900).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Model)
  self.clock = opts.clock or os.time
  self.files_dir = opts.files_dir
  self.base_url = (opts.base_url or "http://fake.invalid"):gsub("/+$", "")
  self.keys = key_owners(opts.keys)
  self.link_ttl = opts.link_ttl or 300
  self.balance = opts.balance or 3000
  self.v3_balance = opts.balance or 2987.5
  self.sellerpic_total = opts.sellerpic_total or 1000
  self.v3_statuses = tonumber(opts.v3_statuses) == 8 and 8 or 5
  self.v3_eta = opts.v3_eta ~= false
  self.list_shape = opts.list_shape == "map" and "map" or "array"
  self.credits = tonumber(opts.credits) or 12.5
  self.presign_ttl = tonumber(opts.presign_ttl) or 900
  self.log = {}
  self:reset()
  return self
end

--- Adds an API key (owner: the account it belongs to; the key itself when nil).
function Model:add_key(key, owner)
  if type(key) ~= "string" or key == "" then return nil, "a key must be a non-empty string" end
  self.keys[key] = type(owner) == "string" and owner or key
  return true
end

-- The account of an API key or an owner_key value (a key not known: itself).
function Model:owner_of(key)
  if key == nil then return nil end
  return self.keys[key] or key
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
  self.file_tokens = {} -- V3 file_token -> {owner=, format=, ready=, size=, adler32=}
  self.presigned = {}   -- upload id of a presigned upload_url -> {token=, expires=, name=}
  self.storage_faults = { presign = {}, put = {}, down = 0, sign = 0 } -- set_storage_faults
  self.stats = { creates = {}, created = {} }
  self.request_faults = {} -- scripted failures of the next creates or uploads (POST /_fake/faults)
  for _, api in ipairs(M.CREATE_APIS) do self.stats.creates[api], self.stats.created[api] = 0, 0 end
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
--- spec: provider ("tripo" | "sellerpic"; "tripo"; "tripo-v2" and "tripo-v3" mean "tripo":
--- one Tripo task reads through both APIs), id, owner_key ("test-key"), type,
--- queue (seconds queued; 1), run (seconds running; 2), final, error_code, error_message
--- (the message of a failed task: V3 error_message, SellerPic errorMsg), status_value,
--- outputs (Tripo names, or {name = ext}; default by type, see TRIPO_KIND), multiview,
--- riggable (true) and rig_type ("biped") of a rig check, credits (V3 credits_consumed),
--- v3_statuses (5 | 8), v3_eta (bool), results (SellerPic count; 1),
--- result_states, file_size (2048), content_type, numeric_ids, eta_noise, input,
--- faults = {...} (names in M.FAULTS; they may also sit at the spec's top level).
function Model:add_task(spec)
  if type(spec) ~= "table" then return nil, "a task spec must be a table" end
  local provider = spec.provider or "tripo"
  if provider == "tripo-v2" or provider == "tripo-v3" then provider = "tripo" end
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
    seq = n,
    queue = max(0, num(spec.queue, 1)),
    run = max(0, num(spec.run, 2)),
    created = self:now(),
    file_size = floor(max(0, num(spec.file_size, 2048))),
    content_type = (not is_null(spec.content_type)) and spec.content_type or nil,
    status_value = (not is_null(spec.status_value)) and tostring(spec.status_value) or nil,
    error_code = (not is_null(spec.error_code)) and spec.error_code or nil,
    -- [error_message] a failed task's message (V3 error_message, SellerPic errorMsg) instead of the default
    error_message = type(spec.error_message) == "string" and spec.error_message or nil,
    -- [/error_message]
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

  t.owner = self:owner_of(t.owner_key)
  if provider == "tripo" then
    t.type = (not is_null(spec.type)) and tostring(spec.type) or "text_to_model"
    t.kind = TRIPO_KIND[t.type] or "model"
    t.final = norm_final_tripo(spec.final)
    t.credits = tonumber(spec.credits)
    if tonumber(spec.v3_statuses) then t.v3_statuses = tonumber(spec.v3_statuses) == 8 and 8 or 5 end
    if type(spec.v3_eta) == "boolean" then t.v3_eta = spec.v3_eta end
    if t.kind == "rigcheck" then
      t.rig = { riggable = spec.riggable ~= false,
        rig_type = (not is_null(spec.rig_type)) and tostring(spec.rig_type) or "biped" }
    end
    local outputs = {} -- array of {name=, ext=}
    local so = spec.outputs
    if is_null(so) then so = KIND_OUTPUTS[t.kind] end
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
    local fmt = is_null(spec.outputs) and requested_model_format(t.input)
    if fmt then
      for _, o in ipairs(outputs) do
        if TRIPO_OUTPUT_EXT[o.name] == "glb" then o.ext = fmt end
      end
    end
    t.outputs = outputs
    t.multiview = spec.multiview == true or (t.kind == "multiview" and spec.multiview ~= false)
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

--- The model time from which task t is final (its status no longer changes). This is the
--- one place a task's end is computed: phase, completed_at and anything told of a task's
--- end (webhooks) read it.
function Model:final_time(t)
  return t.created + t.queue + t.run
end

-- "queued" | "running" | "final", seconds since creation
function Model:phase(t, now)
  local e = (now or self:now()) - t.created
  if e < t.queue then return "queued", e end
  if e < t.queue + t.run then return "running", e end -- final from final_time(t) on
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

-- The answers of each API: its envelope around data (2xx) or around an error code, message
-- and suggestion, with the trace header.

--- A Tripo V2 answer: {"code": 0, "data": ...}, or with a message an error {"code",
--- "message", "suggestion"}.
function Model:reply_tripo_v2(status, data_or_code, message, suggestion, headers)
  headers = headers or {}
  headers["X-Tripo-Trace-ID"] = self:trace_id()
  if status >= 200 and status < 300 and message == nil then
    return json_resp(status, { code = 0, data = data_or_code }, headers)
  end
  return json_resp(status, { code = data_or_code, message = message, suggestion = suggestion or "" }, headers)
end

--- A Tripo V3 answer: {"code": 0, "status": "success", "data": ...}, or with a message an
--- error {"code", "status": "error", "message", "suggestion", "request_id"}. The request id
--- is the one of the request being answered (X-Request-ID when it came with one).
function Model:reply_tripo_v3(status, data_or_code, message, suggestion, headers)
  headers = headers or {}
  headers["X-Tripo-Trace-ID"] = self:trace_id()
  if status >= 200 and status < 300 and message == nil then
    return json_resp(status, { code = 0, status = "success", data = data_or_code }, headers)
  end
  return json_resp(status, { code = data_or_code, status = "error", message = message,
    suggestion = suggestion or "", request_id = self.request_id or json.null }, headers)
end

--- A SellerPic answer: {"code", "data", "msg", "success", "traceId"}.
function Model:reply_sellerpic(status, data, code, msg, headers)
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

-- The fault (if any) that answers this API request about task t; counts it down. provider:
-- "tripo" (V2), "tripo3" (V3) or "sellerpic": the shape of the error answered.
function Model:api_fault(t, ctx, provider)
  local f = t.faults
  local tripo_err = provider == "tripo3" and Model.reply_tripo_v3 or Model.reply_tripo_v2
  if provider == "tripo3" then provider = "tripo" end
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
      return tripo_err(self, 500, 1000, "Internal server error", "Retry later")
    end
    return self:reply_sellerpic(500, nil, 500, "Internal Server Error")
  end
  local hit, rl = take("rate_limit")
  if hit then
    local after = tonumber(rl.retry_after) or 1
    local headers = { ["Retry-After"] = rl.as_date and http_date(ceil(ctx.now + after)) or tostring(floor(after)) }
    if provider == "tripo" then
      return tripo_err(self, 429, tonumber(rl.code) or 2000, "You have exceeded the limit of generation",
        "Try again later", headers)
    end
    return self:reply_sellerpic(429, nil, tonumber(rl.code) or 429, "Too Many Requests", headers)
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
    if provider == "tripo" then return tripo_err(self, 200, code, msg, "Retry later") end
    return self:reply_sellerpic(200, nil, code, msg)
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

-- Where task t stands at ctx.now, shared by V2 and V3: phase, progress, queuing_num (when
-- queued), running_left_time (when running).
function Model:tripo_progress(t, ctx)
  local phase, e = self:phase(t, ctx.now)
  if phase == "queued" then
    return phase, 0, max(1, ceil(t.queue - e)), nil
  elseif phase == "running" then
    local progress = max(0, min(99, floor(100 * (e - t.queue) / t.run)))
    local left = ceil(t.queue + t.run - e)
    if t.eta_noise > 0 then
      local span = 2 * t.eta_noise + 1
      left = left + ((t.polls * 7919 + #t.id * 31) % span) - t.eta_noise
    end
    return phase, progress, nil, max(0, left)
  end
  return phase, 100, nil, nil
end

function Model:tripo_data(t, ctx)
  local phase, progress, queuing, left = self:tripo_progress(t, ctx)
  local data = {
    task_id = t.id, type = t.type, status = "queued", input = t.input, output = {},
    progress = progress, consumed_credit = 0, queuing_num = queuing or -1, running_left_time = -1,
    create_time = floor(t.created),
  }
  if phase == "running" then
    data.status = "running"
    data.running_left_time = left
  elseif phase == "final" then
    data.status = t.status_value or t.final
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
      if t.rig then
        data.output.riggable = t.rig.riggable
        data.output.rig_type = t.rig.rig_type
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

local function iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(t))
end
M.iso8601 = iso8601

-- V2 output names -> the V3 key; model_url takes the first present of pbr_model, model, base_model.
local V3_OUTPUT_KEY = {
  model = "model_url", pbr_model = "model_url", base_model = "model_url",
  generated_image = "generated_image_url", rendered_image = "rendered_image_url",
  rendered_video = "rendered_video_url", multiview_basecolor = "multiview_basecolor_url",
}
M.V3_OUTPUT_KEY = V3_OUTPUT_KEY
local MODEL_RANK = { pbr_model = 1, model = 2, base_model = 3 }

local V3_ERROR_MESSAGE = {
  [2008] = "The content is not allowed by the content policy",
  [2018] = "The task has expired",
}

-- The V3 status of task t once final: status, error_code, error_message (nil when none).
function Model:tripo3_final(t)
  local raw = t.status_value or t.final
  local list = t.v3_statuses or self.v3_statuses
  local code = t.error_code
  if raw == "banned" then
    code = code or 2008
    if list == 5 then raw = "failed" end
  elseif raw == "expired" then
    code = code or 2018
    if list == 5 then raw = "failed" end
  elseif raw == "failed" then
    code = code or 1001
  end
  if raw == "success" or raw == "cancelled" then code = nil end
  if code == nil then return raw, nil, nil end
  return raw, code, t.error_message or V3_ERROR_MESSAGE[tonumber(code)] or "The task failed" -- [error_message]
end

-- The V3 output of a successful task.
function Model:tripo3_output(t, ctx)
  local out, best = {}, nil
  for _, o in ipairs(t.outputs) do
    local key = V3_OUTPUT_KEY[o.name] or o.name
    if key == "model_url" then
      if not best or MODEL_RANK[o.name] < MODEL_RANK[best.name] then best = o end
    elseif out[key] == nil then
      out[key] = self:issue_link(t, ctx, o.name, o.name .. "." .. o.ext, o.ext)
    end
  end
  if best then out.model_url = self:issue_link(t, ctx, best.name, best.name .. "." .. best.ext, best.ext) end
  if t.multiview then
    for _, v in ipairs(VIEWS) do
      local view = v:match("^(%a+)_")
      out[v] = self:issue_link(t, ctx, "generate_multiview_image." .. view, view .. ".png", "png")
    end
  end
  if t.rig then
    out.riggable = t.rig.riggable
    out.rig_type = t.rig.rig_type
  end
  if t.kind == "retarget" and out.model_url then
    -- one animated model per requested animation (the SDK reads output.model_urls)
    local anims = t.input.animations
    local n = type(anims) == "table" and #anims > 1 and #anims or 1
    local urls = json.array({ out.model_url })
    local ext = best.ext
    for i = 2, n do
      urls[i] = self:issue_link(t, ctx, "model." .. i, "model_" .. i .. "." .. ext, ext)
    end
    out.model_urls = urls
  end
  return out
end

--- The V3 task object of t: task_id, type, status, progress, input, output, credits_consumed,
--- created_at, completed_at (left out until final), error_code, error_message (left out unless
--- the task failed), and queuing_num / running_left_time when known unless v3_eta is false.
--- Left out, not null: Tripo's JS SDK types them optional ("absent until the task reaches a
--- terminal status") and its TripoTaskError tests error_code against undefined.
function Model:tripo3_data(t, ctx)
  local phase, progress, queuing, left = self:tripo_progress(t, ctx)
  local eta = t.v3_eta
  if eta == nil then eta = self.v3_eta end
  local data = {
    task_id = t.id, type = t.type, status = "queued", progress = progress, input = t.input,
    output = {}, credits_consumed = 0, created_at = iso8601(t.created),
  }
  if phase == "queued" then
    if eta then data.queuing_num = queuing end
  elseif phase == "running" then
    data.status = "running"
    if eta then data.running_left_time = left end
  else
    local status, code, message = self:tripo3_final(t)
    data.status = status
    data.completed_at = iso8601(self:final_time(t))
    if code then data.error_code, data.error_message = code, message end
    if status == "success" then
      data.credits_consumed = t.credits or self.credits
      data.output = self:tripo3_output(t, ctx)
    end
  end
  return data
end

-- A status read of task t, shared by all APIs: the task's faults, its poll count, its
-- data (data_of(self, t, ctx)) in the API's envelope (wrap(self, data)), or an envelope
-- without data under the wrong_shape fault (bare()), a truncated body, a delay. api: the
-- error shape of api_fault (default: the task's provider; "tripo3" for V3).
function Model:status_reply(t, ctx, data_of, wrap, bare, api)
  local fault = self:api_fault(t, ctx, api or t.provider)
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

local function tripo_ok(self, data) return self:reply_tripo_v2(200, data) end
local function tripo_bare(self) return json_resp(200, { code = 0 }, { ["X-Tripo-Trace-ID"] = self:trace_id() }) end
local function tripo3_ok(self, data) return self:reply_tripo_v3(200, data) end
local function tripo3_bare(self)
  return json_resp(200, { code = 0, status = "success" }, { ["X-Tripo-Trace-ID"] = self:trace_id() })
end

-- Task id if it is a task of provider that belongs to the account of the request's key, else nil.
function Model:own_task(ctx, id, provider)
  local t = self.tasks[id]
  if not t or t.provider ~= provider or t.owner ~= ctx.owner then return nil end
  return t
end

function Model:tripo_status(ctx, id)
  local t = self:own_task(ctx, id, "tripo")
  if not t then
    return self:reply_tripo_v2(404, 2001, "task not found", "Check the task id and the API key that created it")
  end
  return self:status_reply(t, ctx, Model.tripo_data, tripo_ok, tripo_bare)
end

function Model:tripo3_status(ctx, id)
  local t = self:own_task(ctx, id, "tripo")
  if not t then
    return self:reply_tripo_v3(404, 2001, "task not found", "Check the task id and the API key that created it")
  end
  return self:status_reply(t, ctx, Model.tripo3_data, tripo3_ok, tripo3_bare, "tripo3")
end

M.LIST_MAX = 100

-- POST /tasks/list (V3) and /task/batch (V2): {"task_ids": [...]} (1 to 100) ->
-- {"tasks": {id = task} (or an array: list_shape), "missed": [ids]}. The API faults of the
-- listed tasks apply to the whole request (the first one due answers it), each task found
-- counts a poll, and the longest delay of them delays the answer.
function Model:tripo_list(ctx, v3)
  local err_of = v3 and Model.reply_tripo_v3 or Model.reply_tripo_v2
  local body, derr = decode_json(ctx.body or "")
  if type(body) ~= "table" then
    return err_of(self, 400, 1003, "malformed request body: " .. tostring(derr or "not an object"), "Send a JSON object")
  end
  local ids = body.task_ids
  if type(ids) ~= "table" or #ids == 0 then
    return err_of(self, 400, 1004, "invalid parameter: task_ids must be a non-empty array", "Send 1 to 100 task ids")
  end
  if #ids > M.LIST_MAX then
    return err_of(self, 400, 1004, "invalid parameter: at most " .. M.LIST_MAX .. " task_ids", "Send 1 to 100 task ids")
  end
  local found, missed, seen = {}, json.array({}), {}
  for i = 1, #ids do
    local id = ids[i]
    if type(id) == "number" then id = format("%.0f", id) end
    if type(id) ~= "string" then
      return err_of(self, 400, 1004, "invalid parameter: task_ids must hold strings", "Send 1 to 100 task ids")
    end
    if not seen[id] then
      seen[id] = true
      local t = self:own_task(ctx, id, "tripo")
      if t then found[#found + 1] = t else missed[#missed + 1] = id end
    end
  end
  local malformed, delay = false, nil
  for _, t in ipairs(found) do
    local fault = self:api_fault(t, ctx, v3 and "tripo3" or "tripo")
    if fault == "malformed" then malformed = true
    elseif fault then return fault end
  end
  local tasks = self.list_shape == "array" and json.array({}) or {}
  for _, t in ipairs(found) do
    t.polls = t.polls + 1
    local data = v3 and self:tripo3_data(t, ctx) or self:tripo_data(t, ctx)
    if self.list_shape == "array" then tasks[#tasks + 1] = data else tasks[t.id] = data end
    local d = tonumber(t.faults.delay)
    if d and d > 0 and (not delay or d > delay) then delay = d end
  end
  local resp = err_of(self, 200, { tasks = tasks, missed = missed })
  if malformed then truncate(resp) end
  resp.delay = delay
  return resp
end

-- Counts a request that can create a task (for /_fake/stats and the log's `create` entry).
function Model:count_create(ctx, api)
  self.stats.creates[api] = (self.stats.creates[api] or 0) + 1
  if ctx.log then ctx.log.create = { provider = api } end
end

function Model:created(ctx, api, id)
  self.stats.created[api] = (self.stats.created[api] or 0) + 1
  if ctx.log and ctx.log.create then ctx.log.create.task_id = id end
end

-- The task spec a create's body makes: its `fake` field scripts the task, the rest is the
-- task's input; the key that created it owns it.
local function create_spec(body, provider, typ, key)
  local spec = type(body.fake) == "table" and copy(body.fake) or {}
  spec.provider = provider
  spec.type = typ
  if is_null(spec.owner_key) then spec.owner_key = key end
  local input = {}
  for k, v in pairs(body) do if k ~= "fake" then input[k] = v end end
  spec.input = input
  return spec
end

function Model:tripo_create(ctx)
  self:count_create(ctx, "tripo-v2")
  local body, err = decode_json(ctx.body or "")
  if type(body) ~= "table" then
    return self:reply_tripo_v2(400, 1003, "malformed request body: " .. tostring(err or "not an object"), "Send a JSON object")
  end
  if type(body.type) ~= "string" or body.type == "" then
    return self:reply_tripo_v2(400, 1004, "invalid parameter: type is required", "Set the task type")
  end
  local spec = create_spec(body, "tripo", body.type, ctx.key)
  local id, aerr = self:add_task(spec)
  if not id then return self:reply_tripo_v2(400, 1004, "invalid parameter: " .. aerr, "Check the fake task spec") end
  self:created(ctx, "tripo-v2", id)
  return self:reply_tripo_v2(200, { task_id = id })
end

-- The file tokens a V3 create body refers to: values of "file_token" fields and bare strings
-- that look like one ("file_<uuid>"), anywhere in the body but its fake field.
local function file_token_refs(v, key, out)
  if type(v) == "string" then
    if key == "file_token" or v:match("^file_%x+%-%x+%-%x+%-%x+%-%x+$") then out[#out + 1] = v end
  elseif type(v) == "table" then
    for k, x in pairs(v) do
      if k ~= "fake" then file_token_refs(x, k, out) end
    end
  end
  return out
end

function Model:tripo3_create(ctx, path, typ)
  self:count_create(ctx, "tripo")
  local body, err = decode_json(ctx.body or "")
  if type(body) ~= "table" or is_array(body) and next(body) ~= nil then
    return self:reply_tripo_v3(400, 1003, "malformed request body: " .. tostring(err or "not an object"), "Send a JSON object")
  end
  if M.V3_NEED_MODEL[path] and (is_null(body.model_version) or body.model_version == "") and
      (is_null(body.model) or body.model == "") then
    return self:reply_tripo_v3(400, 1004, "invalid parameter: model_version is required",
      "Set model_version (or model), e.g. v3.1-20260211")
  end
  for _, tok in ipairs(file_token_refs(body, nil, {})) do
    local rec = self.file_tokens[tok]
    if not rec or rec.owner ~= ctx.owner then
      return self:reply_tripo_v3(400, 1004, "invalid parameter: invalid file token " .. tok, "Upload the file first (POST /files)")
    end
    if not rec.ready then
      return self:reply_tripo_v3(400, 1004, "invalid parameter: file token " .. tok .. " has no uploaded file",
        "PUT the file to its upload_url first")
    end
  end
  local spec = create_spec(body, "tripo", typ, ctx.key)
  local id, aerr = self:add_task(spec)
  if not id then return self:reply_tripo_v3(400, 1004, "invalid parameter: " .. aerr, "Check the fake task spec") end
  self:created(ctx, "tripo", id)
  return self:reply_tripo_v3(200, { task_id = id, type = typ, status = "queued" })
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

local function file_token(n)
  return format("file_%08x-%04x-4%03x-a%03x-%012x", (n * 2654435761) % 4294967296, n % 65536, n % 4096,
    (n * 7) % 4096, n)
end

-- A part's Content-Type -> format, when its file name has no known extension (an SDK's
-- default name is "upload.bin").
local V3_FORMAT_OF_TYPE = {
  ["image/webp"] = "webp", ["image/png"] = "png", ["image/jpeg"] = "jpeg", ["image/bmp"] = "bmp",
  ["image/tiff"] = "tiff", ["model/gltf-binary"] = "glb", ["model/obj"] = "obj", ["model/stl"] = "stl",
  ["model/3mf"] = "3mf", ["model/vnd.usdz+zip"] = "usdz",
}

-- Leading bytes -> format, for a part whose name and type tell nothing: Tripo's JS SDK
-- sends uploadFile(buffer) without options as "upload.bin", application/octet-stream.
local V3_MAGIC = {
  { "\137PNG\r\n\26\n", "png" }, { "\255\216\255", "jpeg" }, { "glTF", "glb" }, { "BM", "bmp" },
  { "II*\0", "tiff" }, { "MM\0*", "tiff" }, { "Kaydara FBX Binary", "fbx" },
}
local function sniff_format(data)
  data = data or ""
  if data:sub(1, 4) == "RIFF" and data:sub(9, 12) == "WEBP" then return "webp" end
  for _, magic in ipairs(V3_MAGIC) do
    if data:sub(1, #magic[1]) == magic[1] then return magic[2] end
  end
  return nil
end

local function v3_format(name, content_type, data)
  local ext = tostring(name or ""):match("%.([%w]+)$")
  ext = ext and ext:lower()
  if ext and M.V3_FILE_FORMATS[ext] then return ext end
  local ct = type(content_type) == "string" and content_type:match("^%s*([^;%s]+)")
  ct = ct and ct:lower()
  if ct and V3_FORMAT_OF_TYPE[ct] then return V3_FORMAT_OF_TYPE[ct] end
  -- no extension (or .bin) and no type (or octet-stream): the bytes decide
  if (ext == nil or ext == "bin") and (ct == nil or ct == "application/octet-stream") then
    return sniff_format(data)
  end
  return nil
end

local FORMATS_HINT = "Use webp, png, jpeg, bmp, tiff (images) or glb, obj, fbx, stl, 3mf, usdz (models)"

function Model:tripo3_upload(ctx)
  local part, err = self:upload_part(ctx)
  if not part then return self:reply_tripo_v3(400, 1003, "malformed request: " .. err, "Send the file as multipart field 'file'") end
  local fmt = v3_format(part.filename, part.content_type, part.data)
  if not fmt then
    return self:reply_tripo_v3(400, 2004, "unsupported file type: " .. tostring(part.filename), FORMATS_HINT)
  end
  local token = file_token(next_count(self))
  self.file_tokens[token] = { owner = ctx.owner, format = fmt, ready = true, size = part.size,
    adler32 = ctx.log and ctx.log.upload and ctx.log.upload.adler32 }
  return self:reply_tripo_v3(200, { file_token = token })
end

function Model:tripo3_presign(ctx)
  local fault = self:presign_fault() -- storage faults (branch presign)
  if fault then return fault end
  local body, err = decode_json(ctx.body or "")
  if type(body) ~= "table" then
    return self:reply_tripo_v3(400, 1003, "malformed request body: " .. tostring(err or "not an object"), "Send a JSON object")
  end
  if type(body.format) ~= "string" or body.format == "" then
    return self:reply_tripo_v3(400, 1004, "invalid parameter: format is required", FORMATS_HINT)
  end
  local fmt = body.format:lower():gsub("^%.", "")
  if not M.V3_FILE_FORMATS[fmt] then
    return self:reply_tripo_v3(400, 2004, "unsupported file type: " .. body.format, FORMATS_HINT)
  end
  local n = next_count(self)
  local token = file_token(n)
  local upload = format("%08x%08x", (n * 2246822519) % 4294967296, n)
  local name = token .. "." .. fmt
  self.file_tokens[token] = { owner = ctx.owner, format = fmt, ready = false }
  self.presigned[upload] = { token = token, name = name, expires = ctx.now + self.presign_ttl }
  return self:reply_tripo_v3(200, {
    upload_url = self:storage_base(ctx) .. "/storage/uploads/" .. upload .. "/" .. name .. self:storage_query(n),
    file_token = token,
    expires_in = self.presign_ttl,
  })
end

-- PUT <base>/storage/uploads/<upload id>/<name>: the raw bytes of a presigned upload, taken
-- without an API key (the log records whether an Authorization header came anyway). Answers
-- like object storage: 200 with an ETag, 403 XML for an unknown or expired URL.
function Model:serve_storage(ctx)
  local upload, name = ctx.path:match("^/storage/uploads/([^/]+)/([^/]+)$")
  local rec = upload and self.presigned[upload]
  if not rec or rec.name ~= name then
    return text_resp(403, EXPIRED_XML:gsub("Request has expired", "Access Denied"), "application/xml")
  end
  if ctx.method ~= "PUT" then
    return text_resp(405, "method not allowed\n", "text/plain", { Allow = "PUT" })
  end
  if ctx.now >= rec.expires then return text_resp(403, EXPIRED_XML, "application/xml") end
  local fault = self:storage_fault() -- storage faults (branch presign)
  if fault then return fault end
  local data = ctx.body or ""
  local sum = adler32(data)
  if ctx.log then
    ctx.log.upload = { filename = name, content_type = ctx.headers["content-type"], size = #data, adler32 = sum }
  end
  local tok = self.file_tokens[rec.token]
  if tok then tok.ready, tok.size, tok.adler32 = true, #data, sum end
  return text_resp(200, "", "text/plain", { ETag = '"' .. sum .. '"' })
end

-- ---- storage faults (branch presign) -----------------------------------------------------
-- POST /_fake/storage_faults {"presign": [status, ...], "put": [status, ...], "down": n}: the
-- next presign calls answer these statuses (a V3 error: 429 code 1007, 5xx 1000, others 1004),
-- the next PUTs to a valid upload_url answer these (403: the expired-URL XML; others a text
-- body), the next n presign answers point upload_url at 127.0.0.1:1, where nothing listens
-- ("down": n), and the next n upload_urls carry a signature query like object storage's
-- ("sign": n; the storage route ignores it). Each is used up in order; reset clears them.
function Model:set_storage_faults(ctx)
  local spec, err = decode_json(ctx.body or "")
  if type(spec) ~= "table" then
    return json_resp(400, { error = "the body must be a JSON object: " .. tostring(err or "not an object") })
  end
  local f = self.storage_faults
  for _, k in ipairs({ "presign", "put" }) do
    local list = spec[k]
    if list ~= nil and not is_null(list) then
      if type(list) ~= "table" then return json_resp(400, { error = k .. " must be an array of HTTP statuses" }) end
      for _, st in ipairs(list) do
        if type(st) ~= "number" or st < 100 or st > 599 then
          return json_resp(400, { error = k .. " must be an array of HTTP statuses" })
        end
        f[k][#f[k] + 1] = floor(st)
      end
    end
  end
  if tonumber(spec.down) then f.down = f.down + floor(tonumber(spec.down)) end
  if tonumber(spec.sign) then f.sign = f.sign + floor(tonumber(spec.sign)) end
  return json_resp(200, { presign = #f.presign, put = #f.put, down = f.down, sign = f.sign })
end

function Model:presign_fault()
  local st = table.remove(self.storage_faults.presign, 1)
  if not st then return nil end
  local code = st == 429 and 1007 or st >= 500 and 1000 or 1004
  return self:reply_tripo_v3(st, code, "fake presign fault (HTTP " .. st .. ")", "scripted by /_fake/storage_faults")
end

function Model:storage_fault()
  local st = table.remove(self.storage_faults.put, 1)
  if not st then return nil end
  if st == 403 then return text_resp(403, EXPIRED_XML, "application/xml") end
  return text_resp(st, "fake storage fault (HTTP " .. st .. ")\n", "text/plain")
end

function Model:storage_base(ctx)
  local f = self.storage_faults
  if f.down > 0 then
    f.down = f.down - 1
    return "http://127.0.0.1:1"
  end
  return ctx.base
end

function Model:storage_query(n)
  local f = self.storage_faults
  if f.sign <= 0 then return "" end
  f.sign = f.sign - 1
  return format("?X-Amz-Expires=%d&X-Amz-Signature=fakesig%08x", self.presign_ttl, (n * 2654435761) % 4294967296)
end
-- ---- end of storage faults ----------------------------------------------------------------

function Model:tripo3_usage(ctx)
  local limit, offset = tonumber(ctx.query.limit or 20), tonumber(ctx.query.offset or 0)
  if not limit or limit ~= floor(limit) or limit < 1 or limit > 200 then
    return self:reply_tripo_v3(400, 1004, "invalid parameter: limit must be 1 to 200", "Page with limit and offset")
  end
  if not offset or offset ~= floor(offset) or offset < 0 then
    return self:reply_tripo_v3(400, 1004, "invalid parameter: offset must be 0 or more", "Page with limit and offset")
  end
  local mine = {}
  for _, t in pairs(self.tasks) do
    if t.provider == "tripo" and t.owner == ctx.owner then mine[#mine + 1] = t end
  end
  table.sort(mine, function(a, b)
    if a.created ~= b.created then return a.created > b.created end
    return a.seq > b.seq
  end)
  local rows = json.array({})
  for i = offset + 1, min(#mine, offset + limit) do
    local t = mine[i]
    local phase = self:phase(t, ctx.now)
    local status, credits = phase == "running" and "running" or "queued", 0
    if phase == "final" then
      status = self:tripo3_final(t)
      if status == "success" then credits = t.credits or self.credits end
    end
    rows[#rows + 1] = { task_id = t.id, type = t.type, status = status, created_at = iso8601(t.created),
      credits_consumed = credits }
  end
  return self:reply_tripo_v3(200, rows)
end

function Model:route_tripo(ctx)
  local p, m = ctx.path:sub(#TRIPO + 1), ctx.method
  local id = p:match("^/task/([^/]+)$")
  if id == "batch" and m == "POST" then return self:tripo_list(ctx, false) end
  if id and m == "GET" then return self:tripo_status(ctx, id) end
  if p == "/task" and m == "POST" then return self:tripo_create(ctx) end
  if p == "/user/balance" and m == "GET" then
    return self:reply_tripo_v2(200, { balance = self.balance, frozen = 0 })
  end
  if p == "/upload" and m == "POST" then
    local part, err = self:upload_part(ctx)
    if not part then return self:reply_tripo_v2(400, 1003, "malformed request: " .. err, "Send the image as multipart field 'file'") end
    local n = next_count(self)
    return self:reply_tripo_v2(200, { image_token = tripo_id(n + 1000000) })
  end
  if id or p == "/task" or p == "/user/balance" or p == "/upload" then
    return self:reply_tripo_v2(405, 1004, "method not allowed", "")
  end
  return self:reply_tripo_v2(404, 1004, "no such endpoint: " .. ctx.path, "Check the base URL")
end

local V3_ROUTES = { -- path -> method, for the 405 of a known path
  ["/tasks/list"] = "POST", ["/files"] = "POST", ["/files/presign"] = "POST",
  ["/account/balance"] = "GET", ["/account/usage"] = "GET",
}

function Model:route_tripo3(ctx)
  local p, m = ctx.path:sub(#TRIPO3 + 1), ctx.method
  if p == "/tasks/list" and m == "POST" then return self:tripo_list(ctx, true) end
  local id = p:match("^/tasks/([^/]+)$")
  if id and id ~= "list" and m == "GET" then return self:tripo3_status(ctx, id) end
  local typ = M.V3_CREATES[p]
  if typ and m == "POST" then return self:tripo3_create(ctx, p, typ) end
  if p == "/files" and m == "POST" then return self:tripo3_upload(ctx) end
  if p == "/files/presign" and m == "POST" then return self:tripo3_presign(ctx) end
  if p == "/account/balance" and m == "GET" then
    return self:reply_tripo_v3(200, { balance = self.v3_balance, frozen = 0 })
  end
  if p == "/account/usage" and m == "GET" then return self:tripo3_usage(ctx) end
  if typ or V3_ROUTES[p] or (id and id ~= "list") then
    return self:reply_tripo_v3(405, 1004, "method not allowed", "")
  end
  return self:reply_tripo_v3(404, 1004, "no such endpoint: " .. ctx.path, "Check the base URL")
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
        e.errorMsg = t.error_message or "generation failed" -- [error_message]
      end
    end
    list[#list + 1] = e
  end
  return { resultList = list }
end

local function sp_not_found(self)
  return self:reply_sellerpic(404, nil, 404, "Record Not Found")
end

local function sellerpic_ok(self, data) return self:reply_sellerpic(200, data) end
local function sellerpic_bare(self)
  return json_resp(200, { code = 0, msg = "success", success = true, traceId = self:trace_id() })
end

function Model:sellerpic_status(ctx)
  local id = ctx.query.id
  if is_null(id) or id == "" then return self:reply_sellerpic(400, nil, 400, "id is required") end
  local t = self:own_task(ctx, tostring(id), "sellerpic")
  if not t then return sp_not_found(self) end
  return self:status_reply(t, ctx, Model.sellerpic_data, sellerpic_ok, sellerpic_bare)
end

function Model:sellerpic_download(ctx)
  local rid = ctx.query.id
  if is_null(rid) or rid == "" then return self:reply_sellerpic(400, nil, 400, "id is required") end
  local ref = self.results[tostring(rid)]
  if not ref or ref.task.owner ~= ctx.owner then return sp_not_found(self) end
  local t, r = ref.task, ref.task.results[ref.index]
  local fault = self:api_fault(t, ctx, "sellerpic")
  if fault and fault ~= "malformed" then return fault end
  local fmt = ctx.query.downloadFormat
  if is_null(fmt) or fmt == "" then fmt = self:sellerpic_ext(t) end
  fmt = tostring(fmt):lower()
  local allowed = t.video and VIDEO_FORMATS or IMAGE_FORMATS
  if not allowed[fmt] then
    return self:reply_sellerpic(400, nil, 400, "invalid downloadFormat '" .. fmt .. "'")
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
  local resp = self:reply_sellerpic(200, data)
  if fault == "malformed" then truncate(resp) end
  return resp
end

function Model:sellerpic_create(ctx, typ)
  self:count_create(ctx, "sellerpic")
  local body = {}
  if ctx.body and ctx.body:match("%S") then
    local b, err = decode_json(ctx.body)
    if type(b) ~= "table" then return self:reply_sellerpic(400, nil, 400, "malformed request body: " .. tostring(err)) end
    body = b
  end
  if not require("taskapi.providers.sellerpic").create_known[typ] then
    -- the API's own task types (the definition keeps their list): another is not an endpoint
    return self:reply_sellerpic(404, nil, 404, "no such task type: " .. tostring(typ))
  end
  local spec = create_spec(body, "sellerpic", typ, ctx.key)
  local id, err = self:add_task(spec)
  if not id then return self:reply_sellerpic(400, nil, 400, "invalid parameter: " .. err) end
  self.sellerpic_used = self.sellerpic_used + 1
  self:created(ctx, "sellerpic", id)
  local t = self.tasks[id]
  return self:reply_sellerpic(200, { id = self:sellerpic_id_value(t, id) })
end

function Model:route_sellerpic(ctx)
  local p, m = ctx.path:sub(#SP + 1), ctx.method
  if p == "/generate" and m == "GET" then return self:sellerpic_status(ctx) end
  local typ = p:match("^/generate/([^/]+)$")
  if typ and m == "POST" then return self:sellerpic_create(ctx, typ) end
  if p == "/download" and m == "GET" then return self:sellerpic_download(ctx) end
  if p == "/usage" and m == "GET" then
    local total = self.sellerpic_total
    return self:reply_sellerpic(200, { remaining = total - self.sellerpic_used, total = total, usage = self.sellerpic_used })
  end
  if p == "/upload" and m == "POST" then
    local part, err = self:upload_part(ctx)
    if not part then return self:reply_sellerpic(400, nil, 400, "malformed request: " .. err) end
    local n = next_count(self)
    return self:reply_sellerpic(200, { fileKey = "UPLOAD/" .. sellerpic_id("19102568", n) .. "/" .. safe_name(part.filename) })
  end
  return self:reply_sellerpic(404, nil, 404, "no such endpoint: " .. ctx.path)
end

----------------------------------------------------------------------------------------------
-- request faults: scripted failures of the next creates or uploads (POST /_fake/faults)
--
-- A fault is {on = "create" | "upload", provider = "tripo" | "tripo-v2" | "sellerpic" | nil (any),
-- fault = NAME, count = n (1), created = bool, retry_after = seconds (429)}. NAME is one of
--   status_408 status_425 status_429 status_500 status_502 status_503 status_504
--            an error answer in the API's envelope (429 with Retry-After);
--   reset    the connection closed without an answer once the request was read;
--   hang     no answer for `seconds` (default 60): the client's timeout ends it;
--   cut      a 200 answer cut in the middle of its JSON body;
--   no_id    a 200 answer in the envelope without the task id.
-- `created` says whether the task is made before the fault strikes (the request reached the
-- server, the answer was lost): by default true for reset, hang, cut and no_id, false for the
-- statuses. The clean ones (429, 503) never create. POSTs received are counted in /_fake/stats.
-- The request faults of FAULT_TABLE: name -> the HTTP status it answers, or true.
M.REQUEST_FAULTS = {}
for _, f in ipairs(M.FAULT_TABLE) do
  if f[2] == "request" then M.REQUEST_FAULTS[f[1]] = tonumber(f[1]:match("^status_(%d+)$")) or true end
end
local LOST_ANSWER = { reset = true, hang = true, cut = true, no_id = true }

--- What a request is for the faults: "create" or "upload" (or nil), and its API.
function Model:request_kind(ctx)
  local p, m = ctx.path, ctx.method
  if m == "PUT" and p:sub(1, 9) == "/storage/" then return "upload", "tripo" end
  if m ~= "POST" then return nil end
  if p:sub(1, #TRIPO3 + 1) == TRIPO3 .. "/" then
    local sub = p:sub(#TRIPO3 + 1)
    if M.V3_CREATES[sub] then return "create", "tripo" end
    if sub == "/files" or sub == "/files/presign" then return "upload", "tripo" end
  elseif p:sub(1, #TRIPO + 1) == TRIPO .. "/" then
    local sub = p:sub(#TRIPO + 1)
    if sub == "/task" then return "create", "tripo-v2" end
    if sub == "/upload" then return "upload", "tripo-v2" end
  elseif p:sub(1, #SP + 1) == SP .. "/" then
    local sub = p:sub(#SP + 1)
    if sub:match("^/generate/[^/]+$") then return "create", "sellerpic" end
    if sub == "/upload" then return "upload", "sellerpic" end
  end
  return nil
end

--- Adds a scripted request fault (the body of POST /_fake/faults); returns true or nil, err.
function Model:add_request_fault(f)
  if type(f) ~= "table" then return nil, "a request fault must be a table" end
  if f.on ~= "create" and f.on ~= "upload" then return nil, "a request fault needs on = \"create\" or \"upload\"" end
  if not M.REQUEST_FAULTS[f.fault] then
    local names = {}
    for k in pairs(M.REQUEST_FAULTS) do names[#names + 1] = k end
    table.sort(names)
    return nil, "unknown request fault '" .. tostring(f.fault) .. "' (known: " .. concat(names, ", ") .. ")"
  end
  local created = f.created
  if is_null(created) then created = LOST_ANSWER[f.fault] == true end
  if f.fault == "status_429" or f.fault == "status_503" then created = false end
  local list = self.request_faults
  list[#list + 1] = { on = f.on, provider = (not is_null(f.provider)) and f.provider or nil, fault = f.fault,
    count = math.max(1, floor(tonumber(f.count) or 1)), created = created == true,
    retry_after = tonumber(f.retry_after) or 1, seconds = tonumber(f.seconds) or 60 }
  return true
end

-- The first scripted fault that applies to this request (counted down), or nil.
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

-- An error answer of status st in the envelope of api.
function Model:api_error(api, st, retry_after)
  local headers = st == 429 and { ["Retry-After"] = tostring(floor(retry_after or 1)) } or nil
  local msg = ({ [408] = "Request Timeout", [425] = "Too Early", [429] = "Too Many Requests",
    [500] = "Internal server error", [502] = "Bad Gateway", [503] = "Service Unavailable",
    [504] = "Gateway Timeout" })[st] or "error"
  if api == "tripo" then return self:reply_tripo_v3(st, st == 429 and 2000 or 1000, msg, "Retry later", headers) end
  if api == "tripo-v2" then return self:reply_tripo_v2(st, st == 429 and 2000 or 1000, msg, "Retry later", headers) end
  return self:reply_sellerpic(st, nil, st, msg, headers)
end

-- Applies fault f to the answer resp the request would have had (nil when the task was not
-- made): the answer a client sees.
function Model:apply_request_fault(f, api, resp)
  local st = M.REQUEST_FAULTS[f.fault]
  if type(st) == "number" then return self:api_error(api, st, f.retry_after) end
  resp = resp or self:api_error(api, 500)
  if f.fault == "reset" then resp.reset = true
  elseif f.fault == "hang" then resp.delay = f.seconds
  elseif f.fault == "cut" then truncate(resp)
  elseif f.fault == "no_id" then
    local body = decode_json(resp.body or "")
    if type(body) == "table" and type(body.data) == "table" then
      body.data.task_id, body.data.id, body.data.file_token, body.data.image_token, body.data.fileKey = nil, nil, nil, nil, nil
      resp.body = json.encode(body) or resp.body
    end
  end
  return resp
end

----------------------------------------------------------------------------------------------
-- control routes (/_fake/...)

local function log_json(self)
  local out = json.array({})
  for i, e in ipairs(self.log) do
    out[i] = { method = e.method, path = e.path, query = e.query, headers = e.headers, time = e.time,
      authorization = e.authorization, key = e.key, upload = e.upload, create = e.create,
      connection = e.connection, fault = e.fault }
  end
  return out
end

--- Counts of requests that could create a task, per provider ("tripo" is V3, "tripo-v2",
--- "sellerpic"): creates = every such request, created = those that made a task.
function Model:get_stats()
  local st = { creates = {}, created = {} }
  for k, v in pairs(self.stats.creates) do st.creates[k] = v end
  for k, v in pairs(self.stats.created) do st.created[k] = v end
  return st
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
  if p == "/_fake/stats" and m == "GET" then return json_resp(200, self:get_stats()) end
  if p == "/_fake/faults" and m == "POST" then
    local f, err = decode_json(ctx.body or "")
    if type(f) ~= "table" then return json_resp(400, { error = "the body must be a JSON request fault: " .. tostring(err) }) end
    local ok, ferr = self:add_request_fault(f)
    if not ok then return json_resp(400, { error = ferr }) end
    return json_resp(200, { ok = true, pending = #self.request_faults })
  end
  if p == "/_fake/faults" and m == "DELETE" then
    local n = #self.request_faults
    self.request_faults = {}
    return json_resp(200, { ok = true, cleared = n })
  end
  if p == "/_fake/storage_faults" and m == "POST" then return self:set_storage_faults(ctx) end
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
      polls = t.polls, spec = t.spec, final_time = self:final_time(t) })
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
  ctx.owner = key and self.keys[key] or nil
  -- [webhook] signed deliveries (taskapi.fake.webhook): /_fake/webhook, arming its sender
  local wh = require("taskapi.fake.webhook").on_request(self, ctx)
  if wh then return wh end
  local p = ctx.path
  if p:sub(1, 7) == "/_fake/" then return self:route_control(ctx) end

  local logged = {}
  for k, v in pairs(headers) do if k ~= "authorization" then logged[k] = v end end
  ctx.log = {
    method = ctx.method, path = p, query = copy(ctx.query), headers = logged, time = ctx.now,
    authorization = has_auth, key = key, connection = req.connection,
  }
  self.log[#self.log + 1] = ctx.log

  local fault, fapi = self:take_request_fault(ctx)
  if fault then
    if ctx.owner and fault.created then
      return self:apply_request_fault(fault, fapi, self:route(ctx))
    end
    if ctx.owner or p:sub(1, 9) == "/storage/" then
      -- counted as received; nothing was made
      local kind = self:request_kind(ctx)
      if kind == "create" then self:count_create(ctx, fapi) end
      return self:apply_request_fault(fault, fapi, nil)
    end
  end
  return self:route(ctx)
end

--- Routes one logged request (no control route) to its API.
function Model:route(ctx)
  local p, headers = ctx.path, ctx.headers
  local token, name = p:match("^/files/([^/]+)/([^/]+)$")
  if token then return self:serve_file(ctx, token, name) end
  if p:sub(1, 9) == "/storage/" then return self:serve_storage(ctx) end

  if p:sub(1, #TRIPO3 + 1) == TRIPO3 .. "/" then
    local rid = headers["x-request-id"]
    if type(rid) ~= "string" or rid == "" then
      self.trace_counter = self.trace_counter + 1
      rid = format("req_%08x%08x", floor(ctx.now) % 4294967296, self.trace_counter)
    end
    self.request_id = rid
    local resp
    if not ctx.owner then
      resp = self:reply_tripo_v3(401, 2, "Authentication failed", "Check your API key (and its region)")
    else
      resp = self:route_tripo3(ctx)
    end
    self.request_id = nil
    resp.headers["X-Request-ID"] = rid
    return resp
  end

  if p:sub(1, #TRIPO + 1) == TRIPO .. "/" then
    if not ctx.owner then
      return self:reply_tripo_v2(401, 1002, "Authentication failed", "Check your API key (and its region)")
    end
    return self:route_tripo(ctx)
  end
  if p:sub(1, #SP + 1) == SP .. "/" then
    if not ctx.owner then
      return self:reply_sellerpic(401, nil, 401, "Unauthorized")
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
