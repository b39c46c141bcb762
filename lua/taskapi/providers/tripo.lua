-- taskapi.providers.tripo: Tripo3D's current API (V3) as data (see provider.lua for the shared
-- part). It also holds what V3 and V2 (providers/tripo_v2.lua) share: the error codes, the
-- status map and one reader of the task payload, which takes either version's field names
-- (V3 `model_url`, `created_at` ISO strings, `credits_consumed`; V2 `model`, `create_time`,
-- `consumed_credit`).
local function null_of(v, null) if v == null then return nil end return v end

-- Output names in their stable order, each read from its V3 key (`<name>_url`) or its V2 key
-- (`<name>`). The four views also come nested in V2's `generate_multiview_image`.
local OUTPUTS = {
  "model", "base_model", "pbr_model", "generated_image", "rendered_image", "rendered_video",
  "multiview_basecolor", "front_view", "left_view", "back_view", "right_view",
}

local function kind_of(name)
  if name:find("model", 1, true) then return "model" end
  if name:find("video", 1, true) then return "video" end
  return "image"
end

local find = string.find

local function is_url(v) return type(v) == "string" and find(v, "^https?://") ~= nil end

-- Each named output once, with what a read needs precomputed (no string built per call):
-- {name, V3 key, kind, is a view (also read from generate_multiview_image)}.
local NAMED = {}
-- The keys read by name; any other key holding a URL is an extra output, any other value
-- (riggable, rig_type, ...) goes to task.values.
local KNOWN = { generate_multiview_image = true, model_urls = true }
for i, name in ipairs(OUTPUTS) do
  NAMED[i] = { name, name .. "_url", kind_of(name), name:match("_view$") ~= nil }
  KNOWN[name] = true
  KNOWN[name .. "_url"] = true
end

-- Appends {name, url, kind} to list when url is a URL not in list yet (outputs are few: a
-- scan is cheaper than a set keyed by long strings); true when it did.
local function add(list, name, url, kind)
  if not is_url(url) then return false end
  local n = #list
  for i = 1, n do
    if list[i].url == url then return false end
  end
  list[n + 1] = { name = name, url = url, kind = kind or kind_of(name) }
  return true
end

local function read_outputs(out, null)
  local list, values = {}, nil
  if type(out) ~= "table" then return list, nil end
  local mv = out.generate_multiview_image
  if type(mv) ~= "table" then mv = nil end
  local urls = out.model_urls
  if type(urls) ~= "table" then urls = nil end
  for i = 1, #NAMED do
    local o = NAMED[i]
    local url = out[o[2]]
    if url == nil or url == null then url = out[o[1]] end
    if url == null then url = nil end
    if url == nil and mv and o[4] then url = mv[o[2]] end
    if url == nil and urls and i == 1 then url = urls[1] end -- OUTPUTS[1] is "model"
    if url ~= nil then add(list, o[1], url, o[3]) end
  end
  -- More models than one (V3 `model_urls`): model_2, model_3, ... after the named outputs.
  if urls then
    local n = 1
    for _, url in ipairs(urls) do
      if add(list, "model_" .. (n + 1), url) then n = n + 1 end
    end
  end
  -- Undocumented fields holding a URL come last, in name order ("x_url" is named "x").
  local extra
  for k, v in pairs(out) do
    if not KNOWN[k] and type(k) == "string" then
      if is_url(v) then
        extra = extra or {}
        extra[#extra + 1] = k
      elseif v ~= null then
        values = values or {}
        values[k] = v
      end
    end
  end
  if extra then
    table.sort(extra)
    for _, k in ipairs(extra) do add(list, (k:gsub("_url$", "")), out[k]) end
  end
  return list, values
end

local STATES = {
  queued = "queued", running = "running", success = "succeeded", failed = "failed",
  banned = "banned", expired = "expired", cancelled = "cancelled", canceled = "cancelled",
  unknown = "unknown",
}

-- V3 may send only five statuses: a moderated task is `failed` with error_code 2008, an
-- expired one `failed` with 2018.
local FAILED_AS = { [2008] = "banned", [2018] = "expired" }

local function read_task(d, null)
  local err
  local code = null_of(d.error_code, null)
  if code ~= nil then
    local msg = null_of(d.error_message, null) or null_of(d.error_msg, null)
    err = { code = code, message = type(msg) == "string" and msg or "task failed with error code " .. tostring(code) }
  end
  local state
  if d.status == "failed" and type(code) == "number" then state = FAILED_AS[code] end
  local outputs, values = read_outputs(null_of(d.output, null), null)
  return {
    status = d.status,
    state = state,
    progress = d.progress,
    queue_position = d.queuing_num,
    eta = d.running_left_time,
    outputs = outputs,
    values = values,
    error = err,
    type = d.type,
    created_at = null_of(d.created_at, null) or null_of(d.create_time, null),
    completed_at = null_of(d.completed_at, null),
    credits = null_of(d.credits_consumed, null) or null_of(d.consumed_credit, null),
  }
end

-- Provider codes whose meaning differs from their HTTP status (the same in V2 and V3).
local CODES = {
  [1000] = { "server", true }, [1001] = { "server", true }, [2000] = { "rate_limited", true },
  [1007] = { "rate_limited", true }, [2010] = { "auth", false }, [2001] = { "not_found", false },
}

-- Tasks of one batch answer: data.tasks as a map {id = task} or an array of tasks, and
-- data.missed, the ids the API does not know (for this key).
local function read_batch(data, null)
  local by = {}
  local tasks = null_of(data.tasks, null)
  if type(tasks) == "table" then
    for k, t in pairs(tasks) do
      if type(t) == "table" then
        local id = null_of(t.task_id, null)
        if type(id) ~= "string" then id = type(k) == "string" and k or nil end
        if id then by[id] = t end
      end
    end
  end
  local missed = {}
  if type(data.missed) == "table" then
    for _, id in ipairs(data.missed) do
      if type(id) == "string" then missed[#missed + 1] = id end
    end
  end
  return by, missed
end

-- A create's task type: the V2 names and the V3 endpoint names (with or without the group)
-- all lead to one V3 endpoint.
local ENDPOINTS = {
  text_to_model = "/generation/text-to-model",
  image_to_model = "/generation/image-to-model",
  multiview_to_model = "/generation/multiview-to-model",
  text_to_image = "/generation/text-to-image", generate_image = "/generation/text-to-image",
  image_to_image = "/generation/image-to-image",
  image_to_multiview = "/generation/image-to-multiview", generate_multiview_image = "/generation/image-to-multiview",
  edit_multiview = "/generation/edit-multiview",
  texture_model = "/models/texture",
  convert_model = "/models/convert",
  stylize_model = "/models/stylize",
  refine_model = "/models/refine",
  import_model = "/models/import",
  mesh_segmentation = "/mesh/segment",
  mesh_completion = "/mesh/complete",
  smart_lowpoly = "/mesh/decimate", highpoly_to_lowpoly = "/mesh/decimate", mesh_decimation = "/mesh/decimate",
  animate_prerigcheck = "/animations/rig-check",
  animate_rig = "/animations/rig",
  animate_retarget = "/animations/retarget",
}
local CREATE_TYPES, CREATE_NAMES = {}, {}
for name, path in pairs(ENDPOINTS) do
  CREATE_NAMES[#CREATE_NAMES + 1] = name
  CREATE_TYPES[name] = path
  CREATE_TYPES[path:sub(2)] = path               -- "generation/text-to-model"
  CREATE_TYPES[path:match("([^/]+)$")] = path    -- "text-to-model", "rig-check"
end

table.sort(CREATE_NAMES)

-- Fields a create must carry, with an example value for the error message.
local REQUIRED = {
  ["/generation/text-to-model"] = { { "model_version", "model" }, "v3.1-20260211" },
  ["/generation/image-to-model"] = { { "model_version", "model" }, "v3.1-20260211" },
  ["/generation/multiview-to-model"] = { { "model_version", "model" }, "v3.1-20260211" },
}

-- What both versions' definitions share; `family(own)` is a definition of the family: these
-- fields, then its own.
local FAMILY = {
  key_env = "TRIPO_API_KEY",
  trace_header = "X-Tripo-Trace-ID", -- its value is a response's trace_id
  id_syntax = "token",
  -- No minimum interval is documented; the official SDKs poll every 2 s.
  min_interval = 2,
  create_result = "task_id",
  upload_field = "file",
  -- An expired output link is renewed by reading the task again.
  envelope = { code = "code", message = "message", suggestion = "suggestion", data = "data" },
  codes = CODES,
  states = STATES,
  read_task = read_task,
}

local function family(own)
  local def = {}
  for k, v in pairs(FAMILY) do def[k] = v end
  for k, v in pairs(own) do def[k] = v end
  return def
end

return family {
  name = "tripo",
  api = "v3",
  base_url = "https://openapi.tripo3d.ai/v3",
  regions = { global = "https://openapi.tripo3d.ai/v3", cn = "https://openapi.tripo3d.com/v3" },
  status_path = "/tasks/{id}",
  -- Up to 100 tasks read in one request (POST {"task_ids": [...]}).
  batch = { path = "/tasks/list", max = 100, field = "task_ids", read = read_batch },
  -- One endpoint per capability, the body without `type`.
  create_types = CREATE_TYPES,
  create_names = CREATE_NAMES,
  create_required = REQUIRED,
  balance_path = "/account/balance",
  usage_path = "/account/usage?limit={limit}&offset={offset}", usage_max = 200,
  -- Upload: images and models as multipart field "file", up to 200 MB.
  upload_path = "/files",
  upload_max_bytes = 200 * 1024 * 1024,
  upload_result = "file_token",
  upload_types = { "png", "jpg", "webp", "bmp", "tiff", "glb", "obj", "fbx", "stl", "3mf", "usdz" },
  presign_path = "/files/presign", -- above upload_max_bytes: presign, then PUT to the storage host
  -- shared with tripo-v2
  _shared = { family = family, read_batch = read_batch, create_names = CREATE_NAMES, create_known = ENDPOINTS },
}
