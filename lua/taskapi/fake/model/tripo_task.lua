-- taskapi.fake.model.tripo_task: the Tripo task, one record that both Tripo APIs read (V2 in
-- tripo_v2.lua, V3 in tripo.lua): its type's outputs and their formats, where it stands
-- (progress, queue, time left), the envelope both APIs share, one task's status read and the
-- many-at-once read (V3 /tasks/list, V2 /task/batch).
local B = require "taskapi.fake.model.base"
local faults = require "taskapi.fake.model.faults"
local json = require "taskapi.json"

local P = { Model = {} }
local Model = P.Model

local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local format = string.format
local is_null = B.is_null

-- What a Tripo task of a type makes when its spec names no outputs: "model" (a model file
-- and a rendered preview), "image" (one generated image), "multiview" (four views),
-- "rigcheck" (riggable + rig_type, no file), "rig" (a rigged model), "retarget" (animated
-- models: model_url and, in V3, model_urls).
P.TRIPO_KIND = {
  text_to_image = "image", generate_image = "image", image_to_image = "image",
  generate_multiview_image = "multiview", edit_multiview_image = "multiview",
  image_to_multiview = "multiview", edit_multiview = "multiview",
  animate_prerigcheck = "rigcheck", rig_check = "rigcheck",
  animate_rig = "rig", rig = "rig",
  animate_retarget = "retarget", retarget = "retarget",
}

local KIND_OUTPUTS = {
  model = { "model", "rendered_image" }, image = { "generated_image" }, multiview = {}, rigcheck = {},
  rig = { "model" }, retarget = { "model" },
}

P.TRIPO_FINAL = { success = true, failed = true, banned = true, expired = true, cancelled = true, unknown = true }

P.OUTPUT_EXT = {
  model = "glb", base_model = "glb", pbr_model = "glb",
  generated_image = "png", rendered_image = "webp", rendered_video = "mp4", multiview_basecolor = "png",
}

-- The four views of a multiview task (V3's keys; V2 nests them in generate_multiview_image).
P.VIEWS = { "front_view_url", "left_view_url", "back_view_url", "right_view_url" }

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

function P.tripo_id(n)
  return format("7f3a9c1e-%04x-4%03x-a%03x-%012x", n % 65536, n % 4096, (n * 7) % 4096, n)
end

local function norm_final(v)
  v = tostring(v or "success"):lower()
  if v == "succeeded" then v = "success" end
  if v == "canceled" then v = "cancelled" end
  return v
end

-- The outputs of a spec: an array of {name=, ext=} from a list of names or {name = ext}.
local function spec_outputs(t, spec)
  local outputs = {}
  local so = spec.outputs
  if is_null(so) then so = KIND_OUTPUTS[t.kind] end
  if type(so) ~= "table" then return nil, "outputs must be a list of names or a {name = ext} table" end
  if B.is_array(so) then
    for _, name in ipairs(so) do
      outputs[#outputs + 1] = { name = tostring(name), ext = P.OUTPUT_EXT[tostring(name)] or "bin" }
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
      if P.OUTPUT_EXT[o.name] == "glb" then o.ext = fmt end
    end
  end
  return outputs
end

-- The task kind "tripo" of Model:add_task: its default id and its fields from the spec.
P.TASK = {
  new_id = P.tripo_id,
  fill = function(_, t, spec)
    t.type = (not is_null(spec.type)) and tostring(spec.type) or "text_to_model"
    t.kind = P.TRIPO_KIND[t.type] or "model"
    t.final = norm_final(spec.final)
    t.credits = tonumber(spec.credits)
    if tonumber(spec.v3_statuses) then t.v3_statuses = tonumber(spec.v3_statuses) == 8 and 8 or 5 end
    if type(spec.v3_eta) == "boolean" then t.v3_eta = spec.v3_eta end
    if t.kind == "rigcheck" then
      t.rig = { riggable = spec.riggable ~= false,
        rig_type = (not is_null(spec.rig_type)) and tostring(spec.rig_type) or "biped" }
    end
    local outputs, err = spec_outputs(t, spec)
    if not outputs then return err end
    t.outputs = outputs
    t.multiview = spec.multiview == true or (t.kind == "multiview" and spec.multiview ~= false)
    return nil
  end,
}

-- A Tripo answer, V2's ({"code": 0, "data": ...}, or with a message an error {"code",
-- "message", "suggestion"}) or with v3 V3's (the same with "status": "success" | "error",
-- and the request_id of the request being answered on errors); with a new trace id. Without
-- data: the envelope alone.
function P.reply(self, v3, status, data_or_code, message, suggestion, headers)
  headers = headers or {}
  headers["X-Tripo-Trace-ID"] = self:trace_id()
  local ok = status >= 200 and status < 300 and message == nil
  local body
  if ok then
    body = { code = 0, data = data_or_code }
  else
    body = { code = data_or_code, message = message, suggestion = suggestion or "" }
  end
  if v3 then
    body.status = ok and "success" or "error"
    if not ok then body.request_id = self.request_id or json.null end
  end
  return B.json_resp(status, body, headers)
end

-- The API of a Tripo file (tripo.lua, tripo_v2.lua) as the router, the faults and the reads
-- use it: name (for stats and request faults), prefix (of its paths), serve(self, ctx) (a
-- request under prefix), reply (its envelope, also its error answer), data(self, t, ctx)
-- (its task object) and kind(sub) (what a POST to sub is for request faults: "create",
-- "upload" or nil). SellerPic's (sellerpic.lua) has the same fields but reply.
function P.api(name, prefix, serve, reply, data, kind)
  return {
    name = name, prefix = prefix, tripo = true, serve = serve, data = data, kind = kind,
    error = reply,
    ok = function(self, d) return reply(self, 200, d) end,
    bare = function(self) return reply(self, 200) end,
  }
end

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

-- A link to output o of task t (its file named after the output).
function Model:tripo_link(t, ctx, o)
  return self:issue_link(t, ctx, o.name, o.name .. "." .. o.ext, o.ext)
end

-- The links to the four views of a multiview task t: V3 key (front_view_url, ...) -> link.
function Model:tripo_views(t, ctx)
  local out = {}
  for _, v in ipairs(P.VIEWS) do
    local view = v:match("^(%a+)_")
    out[v] = self:issue_link(t, ctx, "generate_multiview_image." .. view, view .. ".png", "png")
  end
  return out
end

-- One task's status read through api (tripo.lua's or tripo_v2.lua's API).
function Model:tripo_read(ctx, id, api)
  local t = self:own_task(ctx, id, "tripo")
  if not t then
    return api.error(self, 404, 2001, "task not found", "Check the task id and the API key that created it")
  end
  return self:status_reply(t, ctx, api)
end

P.LIST_MAX = 100

-- POST /tasks/list (V3) and /task/batch (V2) through api: {"task_ids": [...]} (1 to 100) ->
-- {"tasks": {id = task} (or an array: list_shape), "missed": [ids]}. The API faults of the
-- listed tasks apply to the whole request (the first one due answers it), each task found
-- counts a poll, and the longest delay of them delays the answer.
function Model:tripo_list(ctx, api)
  local err_of = api.error
  local body, derr = B.decode_json(ctx.body or "")
  if type(body) ~= "table" then
    return err_of(self, 400, 1003, "malformed request body: " .. tostring(derr or "not an object"), "Send a JSON object")
  end
  local ids = body.task_ids
  if type(ids) ~= "table" or #ids == 0 then
    return err_of(self, 400, 1004, "invalid parameter: task_ids must be a non-empty array", "Send 1 to 100 task ids")
  end
  if #ids > P.LIST_MAX then
    return err_of(self, 400, 1004, "invalid parameter: at most " .. P.LIST_MAX .. " task_ids", "Send 1 to 100 task ids")
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
  local malformed = false
  for _, t in ipairs(found) do
    local fault = self:api_fault(t, ctx, api)
    if fault == "malformed" then malformed = true
    elseif fault then return fault end
  end
  local tasks = self.list_shape == "array" and json.array({}) or {}
  if ctx.log then ctx.log.ids = json.array({}) end -- the log names the tasks a list read
  for _, t in ipairs(found) do
    t.polls = t.polls + 1
    if ctx.log then ctx.log.ids[#ctx.log.ids + 1] = t.id end
    local data = api.data(self, t, ctx)
    if self.list_shape == "array" then tasks[#tasks + 1] = data else tasks[t.id] = data end
  end
  local resp = api.ok(self, { tasks = tasks, missed = missed })
  if malformed then B.truncate(resp) end
  for _, t in ipairs(found) do
    for e, v in faults.each("reply", t) do e.play(resp, v) end
  end
  return resp
end

return P
