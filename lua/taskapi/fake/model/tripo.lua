-- taskapi.fake.model.tripo: Tripo's V3 API (/tripo/v3): its routes, envelope and errors, the
-- V3 task object and status list, one create endpoint per capability, file uploads (POST
-- /files and presigned PUTs), balance and usage. The task itself is tripo_task.lua's.
local B = require "taskapi.fake.model.base"
local tripo_task = require "taskapi.fake.model.tripo_task"
local store = require "taskapi.fake.model.store"
local json = require "taskapi.json"

local P = { Model = {} }
local Model = P.Model

local floor, min = math.floor, math.min
local format = string.format
local is_null, iso8601 = B.is_null, B.iso8601

local TRIPO3 = "/tripo/v3"
P.PREFIX = TRIPO3

-- Tripo V3: one create endpoint per capability (under /tripo/v3) -> the task type it makes.
-- Tripo's SDKs show only "text_to_model" for V3; the others are the V2 type names of the
-- same capability (see doc/internals.md), so one task reads the same through both APIs.
P.V3_CREATES = {
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
P.V3_NEED_MODEL = {
  ["/generation/text-to-model"] = true,
  ["/generation/image-to-model"] = true,
  ["/generation/multiview-to-model"] = true,
}

-- Files a V3 upload (POST /files, /files/presign) takes, by extension.
P.V3_FILE_FORMATS = {
  webp = "image", png = "image", jpeg = "image", jpg = "image", bmp = "image", tiff = "image", tif = "image",
  glb = "model", obj = "model", fbx = "model", stl = "model", ["3mf"] = "model", usdz = "model",
}

-- V2 output names -> the V3 key; model_url takes the first present of pbr_model, model, base_model.
P.V3_OUTPUT_KEY = {
  model = "model_url", pbr_model = "model_url", base_model = "model_url",
  generated_image = "generated_image_url", rendered_image = "rendered_image_url",
  rendered_video = "rendered_video_url", multiview_basecolor = "multiview_basecolor_url",
}
local MODEL_RANK = { pbr_model = 1, model = 2, base_model = 3 }

local V3_ERROR_MESSAGE = {
  [2008] = "The content is not allowed by the content policy",
  [2018] = "The task has expired",
}

--- A Tripo V3 answer: {"code": 0, "status": "success", "data": ...}, or with a message an
--- error {"code", "status": "error", "message", "suggestion", "request_id"}. The request id
--- is the one of the request being answered (X-Request-ID when it came with one).
function Model:reply_tripo_v3(status, data_or_code, message, suggestion, headers)
  return tripo_task.reply(self, true, status, data_or_code, message, suggestion, headers)
end

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
    local key = P.V3_OUTPUT_KEY[o.name] or o.name
    if key == "model_url" then
      if not best or MODEL_RANK[o.name] < MODEL_RANK[best.name] then best = o end
    elseif out[key] == nil then
      out[key] = self:tripo_link(t, ctx, o)
    end
  end
  if best then out.model_url = self:tripo_link(t, ctx, best) end
  if t.multiview then
    for k, url in pairs(self:tripo_views(t, ctx)) do out[k] = url end
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
  local body, err = B.decode_json(ctx.body or "")
  if type(body) ~= "table" or B.is_array(body) and next(body) ~= nil then
    return self:reply_tripo_v3(400, 1003, "malformed request body: " .. tostring(err or "not an object"), "Send a JSON object")
  end
  if P.V3_NEED_MODEL[path] and (is_null(body.model_version) or body.model_version == "") and
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
  local spec = store.create_spec(body, "tripo", typ, ctx.key)
  local id, aerr = self:add_task(spec)
  if not id then return self:reply_tripo_v3(400, 1004, "invalid parameter: " .. aerr, "Check the fake task spec") end
  self:created(ctx, "tripo", id)
  return self:reply_tripo_v3(200, { task_id = id, type = typ, status = "queued" })
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
  if ext and P.V3_FILE_FORMATS[ext] then return ext end
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
  local token = file_token(self:next_count())
  self.file_tokens[token] = { owner = ctx.owner, format = fmt, ready = true, size = part.size,
    adler32 = ctx.log and ctx.log.upload and ctx.log.upload.adler32 }
  return self:reply_tripo_v3(200, { file_token = token })
end

-- POST /files/presign {"format"}: a file token and the upload_url of storage.lua that makes
-- it valid once PUT.
function Model:tripo3_presign(ctx)
  local fault = self:presign_fault()
  if fault then return fault end
  local body, err = B.decode_json(ctx.body or "")
  if type(body) ~= "table" then
    return self:reply_tripo_v3(400, 1003, "malformed request body: " .. tostring(err or "not an object"), "Send a JSON object")
  end
  if type(body.format) ~= "string" or body.format == "" then
    return self:reply_tripo_v3(400, 1004, "invalid parameter: format is required", FORMATS_HINT)
  end
  local fmt = body.format:lower():gsub("^%.", "")
  if not P.V3_FILE_FORMATS[fmt] then
    return self:reply_tripo_v3(400, 2004, "unsupported file type: " .. body.format, FORMATS_HINT)
  end
  local n = self:next_count()
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

local V3_ROUTES = { -- path -> method, for the 405 of a known path
  ["/tasks/list"] = "POST", ["/files"] = "POST", ["/files/presign"] = "POST",
  ["/account/balance"] = "GET", ["/account/usage"] = "GET",
}

function Model:route_tripo3(ctx)
  local p, m = ctx.path:sub(#TRIPO3 + 1), ctx.method
  if p == "/tasks/list" and m == "POST" then return self:tripo_list(ctx, P.API) end
  local id = p:match("^/tasks/([^/]+)$")
  if id and id ~= "list" and m == "GET" then return self:tripo_read(ctx, id, P.API) end
  local typ = P.V3_CREATES[p]
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

-- Every V3 answer carries X-Request-ID: the request's own when it sent one, else a new one;
-- a missing or unknown key answers 401 code 2.
function Model:serve_tripo3(ctx)
  local rid = ctx.headers["x-request-id"]
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

-- The API (see tripo_task.api); "tripo" is V3 in stats and request faults.
P.API = tripo_task.api("tripo", TRIPO3, Model.serve_tripo3, Model.reply_tripo_v3, Model.tripo3_data, function(sub)
  if P.V3_CREATES[sub] then return "create" end
  if sub == "/files" or sub == "/files/presign" then return "upload" end
  return nil
end)

return P
