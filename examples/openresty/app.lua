-- The OpenResty example's handlers: a job service on top of taskapi, inside nginx.
--   POST /jobs        {"provider": "tripo", "ids": [...]}  or  {"provider": ..., "create": n,
--                     "params": {...}}  -> {"job": "<job id>", "ids": [...]}; a watcher timer
--                     waits for all the tasks and downloads each result as its task finishes
--   GET  /jobs/<job>  -> the job's state, each task's state and its files
--   GET  /ping        -> "pong" (the worker stays responsive while transfers are in flight)
--   GET  /poll?id=&n= -> n concurrent status reads of one task (a load for the demo and specs)
--   POST /webhooks/tripo -> Tripo's signed webhook deliveries: verified (401 for a bad or stale
--                     signature, 400 for a body that is not the envelope), deduplicated on
--                     Tripo-Webhook-Delivery (in the ngx.shared dict `taskapi_webhooks`), and a
--                     task.completed / task.failed ends the waits on that task at once: the job
--                     watcher polls it right away instead of at its next poll
--   GET  /webhooks/stats -> deliveries handled, duplicates and refused, per task handled
-- Configuration from the environment (nginx `env` directives): TASKAPI_BASE_URL_TRIPO,
-- TASKAPI_BASE_URL_SELLERPIC, TASKAPI_API_KEY, TASKAPI_OUT (the download folder),
-- TASKAPI_MIN_INTERVAL (0 for the fake provider only), TASKAPI_WEBHOOK_SECRET (Tripo's whsec_...
-- value; no secret, no webhook endpoint). Webhooks end the waits of the worker that receives
-- the delivery: this example runs one worker (worker_processes 1).
local taskapi = require "taskapi"
local cjson = require "cjson.safe"

local M = {}

local jobs, seq = {}, 0
local clients = {}

-- The webhook receiver, made when this module loads (before any wait starts: waits listen for
-- deliveries only once a receiver exists in the worker).
local hooks = { handled = 0, duplicates = 0, refused = 0, by_task = {} }
local receiver
do
  local secret = os.getenv("TASKAPI_WEBHOOK_SECRET")
  if secret and secret ~= "" then
    receiver = assert(taskapi.webhook.new {
      secret = secret,
      store = ngx.shared.taskapi_webhooks, -- nil without the lua_shared_dict: an in-memory LRU
      on_event = function(ev)
        hooks.handled = hooks.handled + 1
        if ev.task then hooks.by_task[ev.task.id] = (hooks.by_task[ev.task.id] or 0) + 1 end
      end,
    })
  end
end

local function client(provider)
  if clients[provider] then return clients[provider] end
  local c, err = taskapi.new {
    provider = provider,
    api_key = os.getenv("TASKAPI_API_KEY"),
    base_url = os.getenv("TASKAPI_BASE_URL_" .. provider:upper()),
    min_interval = tonumber(os.getenv("TASKAPI_MIN_INTERVAL") or ""),
  }
  if c then clients[provider] = c end
  return c, err
end

local function reply(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(value))
  return ngx.exit(status)
end

-- The watcher: runs in an ngx.timer, so it outlives the request that started the job.
local function watch(premature, job)
  if premature then return end
  local c = client(job.provider)
  local opts = { interval = job.interval or tonumber(os.getenv("TASKAPI_INTERVAL") or "") or 2, timeout = 600 }
  taskapi.run(function()
    for task, err in c:each_completed(job.ids, opts) do
      local entry = job.tasks[task.id]
      entry.state = task.state
      ngx.update_time()
      entry.done_at = ngx.now()
      if err then
        entry.error = tostring(err)
      elseif task.ok then
        -- each download in its own light thread: results are saved while others still run
        taskapi.spawn(function()
          local files, derr = c:download(task, { dir = job.dir, overwrite = true })
          if files then
            for _, f in ipairs(files) do entry.files[#entry.files + 1] = { name = f.name, path = f.path, bytes = f.bytes } end
          else
            entry.error = tostring(derr)
          end
        end)
      end
    end
  end)
  job.state = "done"
end

function M.create_job()
  ngx.req.read_body()
  local body = cjson.decode(ngx.req.get_body_data() or "")
  if type(body) ~= "table" then return reply(400, { error = "body must be a JSON object" }) end
  local provider = body.provider or "tripo"
  local c, err = client(provider)
  if not c then return reply(400, { error = tostring(err) }) end
  local ids = body.ids or {}
  for _ = 1, tonumber(body.create) or 0 do
    local id, cerr = c:create(body.params or { type = "text_to_model" })
    if not id then return reply(502, { error = tostring(cerr) }) end
    ids[#ids + 1] = id
  end
  if #ids == 0 then return reply(400, { error = "no task ids" }) end
  seq = seq + 1
  local job = { id = tostring(seq), provider = provider, ids = ids, tasks = {}, state = "waiting",
    dir = (os.getenv("TASKAPI_OUT") or "/tmp"), interval = tonumber(body.interval) }
  for _, id in ipairs(ids) do job.tasks[id] = { state = "queued", files = {} } end
  jobs[job.id] = job
  local ok, terr = ngx.timer.at(0, watch, job)
  if not ok then return reply(500, { error = "cannot start the watcher: " .. tostring(terr) }) end
  return reply(201, { job = job.id, ids = ids })
end

function M.get_job(id)
  local job = jobs[id]
  if not job then return reply(404, { error = "no job " .. tostring(id) }) end
  return reply(200, { job = job.id, state = job.state, tasks = job.tasks })
end

function M.ping()
  ngx.say("pong")
end

function M.poll()
  local args = ngx.req.get_uri_args()
  local c = client(args.provider or "tripo")
  local n = tonumber(args.n) or 1
  local fns = {}
  for i = 1, n do fns[i] = function() return c:status(args.id) end end
  local t0 = ngx.now()
  local results, errs = taskapi.gather(fns)
  local ok = 0
  for i = 1, n do if results[i] then ok = ok + 1 end end
  ngx.update_time()
  return reply(200, { ok = ok, failed = n - ok, seconds = ngx.now() - t0, first_error = errs[1] and tostring(errs[1]) })
end

local function raw_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file() -- a body larger than client_body_buffer_size
  local f = path and io.open(path, "rb")
  if not f then return "" end
  body = f:read("*a")
  f:close()
  return body
end

function M.tripo_webhook()
  if not receiver then return reply(503, { error = "no webhook secret configured (TASKAPI_WEBHOOK_SECRET)" }) end
  local ev, err = receiver:handle(ngx.req.get_headers(100), raw_body())
  if not ev then
    hooks.refused = hooks.refused + 1
    ngx.log(ngx.WARN, "webhook refused: ", tostring(err))
    return reply(err.kind == "auth" and 401 or 400, { error = tostring(err) })
  end
  if ev.duplicate then hooks.duplicates = hooks.duplicates + 1 end
  -- answer at once: Tripo wants a 2xx within seconds; the waits do the rest
  return reply(200, { ok = true, type = ev.type, duplicate = ev.duplicate == true, notified = ev.notified or 0 })
end

function M.webhook_stats()
  return reply(200, hooks)
end

return M
