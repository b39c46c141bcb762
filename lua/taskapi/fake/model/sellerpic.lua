-- taskapi.fake.model.sellerpic: SellerPic's API (/sellerpic/v1/api): its task (one or more
-- results, each with its own id and state), routes, envelope and status names, create,
-- status, download links, usage and upload.
local B = require "taskapi.fake.model.base"
local store = require "taskapi.fake.model.store"
local json = require "taskapi.json"

local P = { Model = {} }
local Model = P.Model

local floor = math.floor
local format = string.format
local is_null = B.is_null

local SP = "/sellerpic/v1/api"
P.PREFIX = "/sellerpic"

local IMAGE_FORMATS = { jpg = true, png = true, webp = true }
local VIDEO_FORMATS = { mp4 = true, gif = true, webp = true }

local function sellerpic_id(prefix, n)
  -- 19 digits, far above 2^53: neighbours differ in their last digits only, which a double
  -- cannot tell apart.
  return prefix .. format("%011d", n)
end

local function norm_final(v)
  v = tostring(v or "success"):upper()
  if v == "SUCCESS" or v == "SUCCEEDED" then return "SUCCESS" end
  if v == "FAILED" or v == "FAILURE" then return "FAILED" end
  return "FAILED"
end

-- The task kind "sellerpic" of Model:add_task: its default id and its fields from the spec.
P.TASK = {
  new_id = function(n) return sellerpic_id("18692547", n) end,
  fill = function(self, t, spec, num)
    t.type = (not is_null(spec.type)) and tostring(spec.type) or "instructEdit"
    t.final = norm_final(spec.final)
    t.video = spec.kind == "video" or t.type == "imageToVideo"
    local states = type(spec.result_states) == "table" and spec.result_states or nil
    local count = floor(num(spec.results, states and #states or 1))
    t.results = {}
    for i = 1, count do
      local rid = sellerpic_id("19102568", self:next_count())
      local state = states and states[i] and tostring(states[i]):upper() or t.final
      t.results[i] = { id = rid, state = state }
      self.results[rid] = { task = t, index = i }
    end
    return nil
  end,
}

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
  return B.json_resp(status, body, headers)
end

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

local function not_found(self)
  return self:reply_sellerpic(404, nil, 404, "Record Not Found")
end

function Model:sellerpic_status(ctx)
  local id = ctx.query.id
  if is_null(id) or id == "" then return self:reply_sellerpic(400, nil, 400, "id is required") end
  local t = self:own_task(ctx, tostring(id), "sellerpic")
  if not t then return not_found(self) end
  return self:status_reply(t, ctx, P.API)
end

function Model:sellerpic_download(ctx)
  local rid = ctx.query.id
  if is_null(rid) or rid == "" then return self:reply_sellerpic(400, nil, 400, "id is required") end
  local ref = self.results[tostring(rid)]
  if not ref or ref.task.owner ~= ctx.owner then return not_found(self) end
  local t, r = ref.task, ref.task.results[ref.index]
  local fault = self:api_fault(t, ctx, P.API)
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
  if fault == "malformed" then B.truncate(resp) end
  return resp
end

function Model:sellerpic_create(ctx, typ)
  self:count_create(ctx, "sellerpic")
  local body = {}
  if ctx.body and ctx.body:match("%S") then
    local b, err = B.decode_json(ctx.body)
    if type(b) ~= "table" then return self:reply_sellerpic(400, nil, 400, "malformed request body: " .. tostring(err)) end
    body = b
  end
  if not require("taskapi.providers.sellerpic").create_known[typ] then
    -- the API's own task types (the definition keeps their list): another is not an endpoint
    return self:reply_sellerpic(404, nil, 404, "no such task type: " .. tostring(typ))
  end
  local spec = store.create_spec(body, "sellerpic", typ, ctx.key)
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
    local key = "UPLOAD/" .. sellerpic_id("19102568", self:next_count()) .. "/" .. B.safe_name(part.filename)
    return self:reply_sellerpic(200, { fileKey = key })
  end
  return self:reply_sellerpic(404, nil, 404, "no such endpoint: " .. ctx.path)
end

-- A missing or unknown key answers 401.
function Model:serve_sellerpic(ctx)
  if not ctx.owner then return self:reply_sellerpic(401, nil, 401, "Unauthorized") end
  return self:route_sellerpic(ctx)
end

-- The API (the fields of tripo_task.api's; error in SellerPic's envelope, no suggestion).
P.API = {
  name = "sellerpic", prefix = SP, tripo = false,
  serve = Model.serve_sellerpic,
  error = function(self, status, code, msg, _, headers) return self:reply_sellerpic(status, nil, code, msg, headers) end,
  ok = function(self, data) return self:reply_sellerpic(200, data) end,
  bare = function(self)
    return B.json_resp(200, { code = 0, msg = "success", success = true, traceId = self:trace_id() })
  end,
  data = Model.sellerpic_data,
  kind = function(sub)
    if sub:match("^/generate/[^/]+$") then return "create" end
    if sub == "/upload" then return "upload" end
    return nil
  end,
}

return P
