-- taskapi.providers.tripo_v2 (`provider = "tripo-v2"`): the Tripo3D V2 task API of the seed
-- page, for accounts that still have it. Codes, statuses and the task reader are V3's
-- (providers/tripo.lua reads both versions' field names); what differs is here.
local v3 = require("taskapi.providers.tripo")._shared

return {
  name = "tripo-v2",
  api = "v2",
  base_url = "https://api.tripo3d.ai/v2/openapi",
  regions = { global = "https://api.tripo3d.ai/v2/openapi", cn = "https://api.tripo3d.com/v2/openapi" },
  key_env = "TRIPO_API_KEY",
  trace_header = "X-Tripo-Trace-ID", -- its value is a response's trace_id
  id_syntax = "token",
  -- No minimum interval is documented; the official SDK polls every 2 s.
  min_interval = 2,
  status_path = "/task/{id}",
  batch = { path = "/task/batch", max = 100, field = "task_ids", read = v3.read_batch },
  -- One endpoint for every task type: the body carries `type`.
  create_path = "/task",
  -- The V2 type names (those V3 maps to its endpoints); create(params, {any_type = true})
  -- sends any other.
  create_names = v3.create_names, create_known = v3.create_known,
  create_result = "task_id",
  balance_path = "/user/balance",
  -- Upload: one image (jpg/jpeg/png/webp) as multipart field "file"; no size limit is
  -- documented, 20 MB is taken as a safe one.
  upload_path = "/upload",
  upload_field = "file",
  upload_max_bytes = 20 * 1024 * 1024,
  upload_result = "image_token",
  -- An expired output link is renewed by reading the task again.
  envelope = { code = "code", message = "message", suggestion = "suggestion", data = "data" },
  codes = v3.codes,
  states = v3.states,
  read_task = v3.read_task,
}
