-- examples/workflow.lua: a whole generation workflow as a user would write it: upload an
-- image, create a task from it, wait for the task, download its results.
--
--   TASKAPI_API_KEY=... lua5.4 examples/workflow.lua photo.png out/
--
-- Environment: TASKAPI_PROVIDER (tripo | tripo-v2 | sellerpic; tripo, Tripo's V3 API),
-- TASKAPI_API_KEY (or TRIPO_API_KEY / SELLERPIC_API_KEY), TASKAPI_BASE_URL (another host, or the
-- fake provider: `taskapi fake start` prints its URL; use URL/tripo/v3, URL/tripo/v2/openapi or
-- URL/sellerpic and the key test-key).
--
-- As a module (what examples/workflow_spec.lua tests): require("workflow").run(client, opts)
-- with opts {image=, dir=, type=?, params=?, extra_params=?, timeout=?, interval=?, log=?};
-- it returns
-- {id=, task=, files=} or nil, err (err.step names the step that failed).
local taskapi = require "taskapi"

local M = {}

-- Each provider's task that takes an uploaded image, and where the upload's reference goes.
M.DEFAULTS = {
  tripo = { type = "image_to_model", params = function(ref)
    return { model_version = "v3.1-20260211", input = { file_token = ref } } end },
  ["tripo-v2"] = { type = "image_to_model", params = function(ref) return { file = { type = "png", file_token = ref } } end },
  sellerpic = { type = "instructEdit", params = function(ref) return { fileKey = ref, prompt = "a clean white background" } end },
}

local function fail(step, err)
  err.step = step
  return nil, err
end

function M.run(client, opts)
  local log = opts.log or function() end
  local d = M.DEFAULTS[client.def.name] or {}
  local ref, err = client:upload(opts.image)
  if not ref then return fail("upload", err) end
  log("uploaded " .. opts.image .. " -> " .. ref)

  local params = opts.params or (d.params and d.params(ref)) or {}
  for k, v in pairs(opts.extra_params or {}) do params[k] = v end -- e.g. the fake's script
  params.type = opts.type or d.type
  local id
  id, err = client:create(params)
  if not id then return fail("create", err) end
  log("created task " .. id)

  local task
  task, err = client:wait(id, {
    timeout = opts.timeout or 900, interval = opts.interval,
    on_progress = function(t) log(string.format("%s %s %s%%", id, t.state, tostring(t.progress or "?"))) end,
  })
  if not task then return fail("wait", err) end
  if not task.ok then
    local why = task.error and task.error.message or task.state
    return fail("wait", taskapi.error("task_failed", "task ended " .. task.state .. ": " .. tostring(why),
      { task_id = id, task = task }))
  end

  local files
  files, err = client:download(task, { dir = opts.dir })
  if not files then return fail("download", err) end
  for _, f in ipairs(files) do log("saved " .. f.path .. " (" .. f.bytes .. " bytes)") end
  return { id = id, task = task, files = files }
end

function M.main(argv)
  local image, dir = argv[1], argv[2] or "."
  if not image then
    io.stderr:write("usage: workflow.lua IMAGE [DIR]\n")
    return 2
  end
  local provider = os.getenv("TASKAPI_PROVIDER") or "tripo"
  local key = os.getenv("TASKAPI_API_KEY") or os.getenv(provider == "sellerpic" and "SELLERPIC_API_KEY" or "TRIPO_API_KEY")
  local client, err = taskapi.new { provider = provider, api_key = key, base_url = os.getenv("TASKAPI_BASE_URL") }
  if not client then
    io.stderr:write("workflow: ", tostring(err), "\n")
    return 2
  end
  local result
  result, err = M.run(client, { image = image, dir = dir, log = print })
  client:close()
  if not result then
    io.stderr:write("workflow: ", err.step, ": ", tostring(err), "\n")
    return err.kind == "task_failed" and 1 or 3
  end
  return 0
end

-- Run as a script (not when required).
if arg and arg[0] and arg[0]:match("workflow%.lua$") and not package.loaded["workflow"] then
  os.exit(M.main(arg))
end

return M
