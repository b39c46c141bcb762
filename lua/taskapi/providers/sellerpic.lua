-- taskapi.providers.sellerpic: the SellerPic task API as data (see provider.lua for the shared
-- part). A task has several results; each is one output, named by its result id. The task's
-- state comes from its results: no results yet -> queued; any CREATED/RUNNING -> running
-- (queued while all are CREATED); all final with at least one SUCCESS -> succeeded (failed
-- results keep their own error); all FAILED -> failed; a result status nobody documented ->
-- unknown (finalized, the raw value kept in outputs[i].status).
local RESULT_STATES = { CREATED = "queued", RUNNING = "running", SUCCESS = "succeeded", FAILED = "failed" }

local function str_id(v)
  if type(v) == "number" then return string.format("%d", v) end
  if type(v) == "string" then return v end
  return nil
end

local function read_task(d, null)
  local list = d.resultList
  local outputs = {}
  local n, pending, created, success, failed, unknown = 0, 0, 0, 0, 0, nil
  local first_err
  if type(list) == "table" then
    for _, r in ipairs(list) do
      if type(r) == "table" then
        n = n + 1
        local st = RESULT_STATES[r.status]
        local o = {
          name = str_id(r.id) or tostring(n), id = str_id(r.id), status = r.status,
          state = st or "unknown", kind = "image",
          url = (type(r.fileUrl) == "string" and r.fileUrl ~= "") and r.fileUrl or nil,
        }
        if st == "failed" then
          local code = r.errorCode ~= null and r.errorCode or nil
          o.error = { code = code, message = type(r.errorMsg) == "string" and r.errorMsg or "result failed" }
          first_err = first_err or o.error
          failed = failed + 1
        elseif st == "succeeded" then success = success + 1
        elseif st == "queued" then pending, created = pending + 1, created + 1
        elseif st == "running" then pending = pending + 1
        else unknown = r.status end
        outputs[#outputs + 1] = o
      end
    end
  end
  local state
  if n == 0 then state = "queued"
  elseif pending > 0 then state = (created == pending and created == n) and "queued" or "running"
  elseif unknown ~= nil then state = "unknown"
  elseif success > 0 then state = "succeeded"
  else state = "failed" end
  -- Only successful results are downloadable outputs.
  local ok_outputs = {}
  for _, o in ipairs(outputs) do
    if o.state == "succeeded" then ok_outputs[#ok_outputs + 1] = o end
  end
  return {
    status = unknown or state, state = state, outputs = ok_outputs, results = outputs,
    error = state == "failed" and first_err or nil,
  }
end

local LINK_PATH = "/v1/api/download?id={id}&downloadFormat={format}"

-- The download link of result `out` (def.link): GET LINK_PATH (uhd: the longest side up to
-- 4096 px). call(method, path, vars) is an API call of the client. Returns the URL, or nil, err.
local function link(call, task, out, o)
  local errors = require "taskapi.errors"
  local data, err = call("GET", LINK_PATH .. (o.uhd and "&uhd=true" or ""),
    { id = out.id or out.name, format = o.format })
  if not data then return nil, err end
  if type(data.fileUrl) ~= "string" or data.fileUrl == "" then
    local why = type(data.errorMsg) == "string" and data.errorMsg or ("status " .. tostring(data.status))
    return nil, errors.new("download", "no download link for result " .. out.name .. ": " .. why, { task_id = task.id })
  end
  return data.fileUrl
end

local def = {
  name = "sellerpic",
  base_url = "https://api.sellerpic.ai",
  key_env = "SELLERPIC_API_KEY",
  id_syntax = "digits",
  -- The 1.0.0 docs ask for at least one minute between two status checks of a task.
  min_interval = 60,
  status_path = "/v1/api/generate?id={id}",
  create_path = "/v1/api/generate/{type}",
  -- The task types of the API's "Create Task" pages: the first four are seen in its docs, the
  -- others follow its sidebar's names (Try-On (Accessories), Lifestyle Scene, Swap Fashion
  -- Model, Background Replacer) as the library reads them; create(params, {any_type = true})
  -- sends any other.
  create_names = { "imageToVideo", "instructEdit", "promptSegmentation", "tryOnApparel",
    "backgroundReplacer", "lifestyleScene", "swapFashionModel", "tryOnAccessories" },
  balance_path = "/v1/api/usage",
  -- Upload (API 1.0.1): one image (jpg/jpeg/png/webp) as multipart field "file", up to 40 MB.
  upload_path = "/v1/api/upload",
  upload_field = "file",
  upload_max_bytes = 40 * 1024 * 1024,
  upload_result = "fileKey",
  create_result = "id",
  -- Each successful result is fetched through the download-link endpoint (link, above), which
  -- also renews an expired link; the file's extension is the format asked for (file_ext).
  formats = { jpg = true, png = true, webp = true, mp4 = true, gif = true },
  default_format = "png",
  envelope = { code = "code", message = "msg", data = "data", trace = "traceId" },
  codes = { [30003] = { "rate_limited", true } },
  states = RESULT_STATES,
  read_task = read_task,
  link = link,
  file_ext = function(_, o) return o.format end,
}
def.create_known = {}
for _, n in ipairs(def.create_names) do def.create_known[n] = true end
return def
