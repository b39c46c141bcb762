-- taskapi.providers.tripo_v2 (`provider = "tripo-v2"`): the Tripo3D V2 task API of the seed
-- page, for accounts that still have it. Codes, statuses, the envelope and the task reader are
-- V3's (providers/tripo.lua's `family`, which reads both versions' field names); what differs
-- is here.
local v3 = require("taskapi.providers.tripo")._shared

return v3.family {
  name = "tripo-v2",
  api = "v2",
  base_url = "https://api.tripo3d.ai/v2/openapi",
  regions = { global = "https://api.tripo3d.ai/v2/openapi", cn = "https://api.tripo3d.com/v2/openapi" },
  status_path = "/task/{id}",
  batch = { path = "/task/batch", max = 100, field = "task_ids", read = v3.read_batch },
  -- One endpoint for every task type: the body carries `type`.
  create_path = "/task",
  -- The V2 type names (those V3 maps to its endpoints); create(params, {any_type = true})
  -- sends any other.
  create_names = v3.create_names, create_known = v3.create_known,
  balance_path = "/user/balance",
  -- Upload: one image (jpg/jpeg/png/webp) as multipart field "file"; no size limit is
  -- documented, 20 MB is taken as a safe one.
  upload_path = "/upload",
  upload_max_bytes = 20 * 1024 * 1024,
  upload_result = "image_token",
}
