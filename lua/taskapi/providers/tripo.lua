-- taskapi.providers.tripo: the Tripo3D v2 task API as data (see provider.lua for the shared part).
local null_of = function(v, null) if v == null then return nil end return v end

-- Output names in their stable order; multiview views come from one nested object.
local OUTPUTS = { "model", "base_model", "pbr_model", "generated_image", "rendered_image" }
local VIEWS = { "front", "left", "back", "right" }

local function kind_of(name)
  return name:find("model", 1, true) and "model" or "image"
end

-- The fields read_outputs reads by name; the others holding a URL are the "extra" ones.
local KNOWN = { generate_multiview_image = true }
for _, name in ipairs(OUTPUTS) do KNOWN[name] = true end

local function read_outputs(out, null)
  local list = {}
  if type(out) ~= "table" then return list end
  for i = 1, #OUTPUTS do
    local name = OUTPUTS[i]
    local url = null_of(out[name], null)
    if type(url) == "string" and url ~= "" then
      list[#list + 1] = { name = name, url = url, kind = kind_of(name) }
    end
  end
  local mv = out.generate_multiview_image
  if type(mv) == "table" then
    for _, v in ipairs(VIEWS) do
      local url = mv[v .. "_view_url"]
      if type(url) == "string" and url ~= "" then
        list[#list + 1] = { name = v .. "_view", url = url, kind = "image" }
      end
    end
  end
  -- Undocumented extra fields that hold a URL come last, in name order.
  local extra
  for k, v in pairs(out) do
    if not KNOWN[k] and type(k) == "string" and type(v) == "string" and v:match("^https?://") then
      extra = extra or {}
      extra[#extra + 1] = k
    end
  end
  if extra then
    table.sort(extra)
    for _, k in ipairs(extra) do list[#list + 1] = { name = k, url = out[k], kind = kind_of(k) } end
  end
  return list
end

return {
  name = "tripo",
  base_url = "https://api.tripo3d.ai/v2/openapi",
  key_env = "TRIPO_API_KEY",
  id_syntax = "token",
  -- No minimum interval is documented; the official SDK polls every 2 s.
  min_interval = 2,
  status_path = "/task/{id}",
  create_path = "/task",
  balance_path = "/user/balance",
  -- Upload: one image (jpg/jpeg/png/webp) as multipart field "file"; no size limit is
  -- documented, 20 MB is taken as a safe one.
  upload_path = "/upload",
  upload_field = "file",
  upload_max_bytes = 20 * 1024 * 1024,
  upload_result = "image_token",
  create_result = "task_id",
  -- An expired output link is renewed by reading the task again.
  refresh = "status",
  envelope = { code = "code", message = "message", suggestion = "suggestion", data = "data" },
  -- Provider codes whose meaning differs from their HTTP status.
  codes = {
    [1000] = { "server", true }, [1001] = { "server", true }, [2000] = { "rate_limited", true },
    [1007] = { "rate_limited", true }, [2010] = { "auth", false }, [2001] = { "not_found", false },
  },
  states = {
    queued = "queued", running = "running", success = "succeeded", failed = "failed",
    banned = "banned", expired = "expired", cancelled = "cancelled", unknown = "unknown",
  },
  read_task = function(d, null)
    local err
    local code = null_of(d.error_code, null)
    if code ~= nil then
      local msg = null_of(d.error_msg, null) or null_of(d.error_message, null)
      err = { code = code, message = type(msg) == "string" and msg or "task failed with error code " .. tostring(code) }
    end
    return {
      status = d.status,
      progress = d.progress,
      queue_position = d.queuing_num,
      eta = d.running_left_time,
      outputs = read_outputs(null_of(d.output, null), null),
      error = err,
    }
  end,
}
