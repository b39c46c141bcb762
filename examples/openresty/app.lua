-- The OpenResty example's handlers: a job service on top of taskapi, inside nginx.
--   POST /jobs        {"provider": "tripo", "ids": [...]}  or  {"provider": ..., "create": n,
--                     "params": {...}}  -> {"job": "<job id>", "ids": [...]}; a watcher timer
--                     waits for all the tasks and downloads each result as its task finishes
--   GET  /jobs/<job>  -> the job's state, each task's state and its files
--   GET  /            -> the jobs page (page.lua): every job and its tasks as an HTML table,
--                     kept live by its script polling GET /jobs every second
--   GET  /jobs        -> every job, newest first: {"jobs": [{job, provider, state, tasks: [{id,
--                     type, state, progress, eta, queue_position, error, files: [{name, url,
--                     bytes, image}]}]}]} (what the page shows)
--   GET  /files/<name> -> a result file this worker downloaded (404 for any other name)
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
local page = require "page"

local M = {}

local jobs, seq = {}, 0
local clients = {}
local downloaded = {} -- file name -> path of every result this worker saved (GET /files/<name>)

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

-- Answers are encoded by taskapi.json: lists marked json.array stay JSON arrays when empty.
local json = require "taskapi.json"

local function reply(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say((json.encode(value)))
  return ngx.exit(status)
end

-- The watcher: runs in an ngx.timer, so it outlives the request that started the job.
-- What the page shows of a task, copied from each status the watcher sees (all from the
-- provider: the page escapes every one of them).
local function note(entry, task)
  entry.state = task.state or entry.state
  entry.type = task.type
  entry.progress = task.progress
  entry.eta = task.eta
  entry.queue_position = task.queue_position
  if task.error then
    entry.error = tostring(task.error.message or "failed")
    entry.error_code = task.error.code
  end
end

local function watch(premature, job)
  if premature then return end
  local c = client(job.provider)
  local opts = { interval = job.interval or tonumber(os.getenv("TASKAPI_INTERVAL") or "") or 2, timeout = 600,
    on_progress = function(task) if job.tasks[task.id] then note(job.tasks[task.id], task) end end }
  taskapi.run(function()
    for task, err in c:each_completed(job.ids, opts) do
      local entry = job.tasks[task.id]
      note(entry, task)
      ngx.update_time()
      entry.done_at = ngx.now()
      if err then
        entry.error = tostring(err)
      elseif task.ok then
        -- each download in its own light thread: results are saved while others still run
        entry.downloading = true
        taskapi.spawn(function()
          local files, derr = c:download(task, { dir = job.dir, overwrite = true })
          if files then
            for _, f in ipairs(files) do
              entry.files[#entry.files + 1] = { name = f.name, path = f.path, bytes = f.bytes }
              local base = f.path:match("([^/]+)$")
              if base then downloaded[base] = f.path end
            end
          else
            -- the task succeeded at the provider but its result is not here: a failure of the job
            entry.error = "download failed: " .. tostring(derr)
            entry.download_failed = true
            job.failures = (job.failures or 0) + 1
          end
          entry.downloading = nil
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
  ngx.update_time()
  local job = { id = tostring(seq), provider = provider, ids = ids, tasks = {}, state = "waiting", created = ngx.now(),
    dir = (os.getenv("TASKAPI_OUT") or "/tmp"), interval = tonumber(body.interval) }
  for _, id in ipairs(ids) do job.tasks[id] = { state = "queued", files = json.array({}) } end
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

-- The jobs page and its data: what GET / renders and GET /jobs answers, newest job first.
local IMAGE = { png = true, jpg = true, jpeg = true, webp = true, gif = true }

local function views()
  local list = json.array({})
  for i = seq, 1, -1 do
    local job = jobs[tostring(i)]
    if job then
      local tasks = {}
      for k, id in ipairs(job.ids) do
        local e = job.tasks[id]
        local files = json.array({})
        for n, f in ipairs(e.files) do
          local base = f.path:match("([^/]+)$") or ""
          local ext = (base:match("%.(%w+)$") or ""):lower()
          files[n] = { name = f.name, url = "/files/" .. ngx.escape_uri(base), bytes = f.bytes, image = IMAGE[ext] == true }
        end
        tasks[k] = { id = id, type = e.type, state = e.state, progress = e.progress, eta = e.eta,
          queue_position = e.queue_position, error = e.error, error_code = e.error_code,
          downloading = e.downloading == true, download_failed = e.download_failed == true, files = files }
      end
      local state = job.state
      if (job.failures or 0) > 0 then state = state .. ", " .. job.failures .. " download(s) failed" end
      list[#list + 1] = { job = job.id, provider = job.provider, state = state, created = job.created,
        tasks = json.array(tasks) }
    end
  end
  return list
end

--- POST /jobs starts a job; GET /jobs lists them (the page's data).
function M.jobs()
  local method = ngx.req.get_method()
  if method == "POST" then return M.create_job() end
  if method ~= "GET" and method ~= "HEAD" then
    ngx.header["Allow"] = "GET, HEAD, POST"
    return reply(405, { error = "GET lists the jobs, POST starts one" })
  end
  ngx.header["Cache-Control"] = "no-store"
  return reply(200, { jobs = views() })
end

--- GET /: the jobs page, rendered on the server (a page without JavaScript is complete); its
--- script then keeps it live from GET /jobs. The CSP lets only this response's own script and
--- style run: even an escaping bug could not run a provider's markup.
function M.page()
  local nonce = ngx.var.request_id
  ngx.header["Content-Type"] = "text/html; charset=utf-8"
  ngx.header["Cache-Control"] = "no-store"
  ngx.header["X-Content-Type-Options"] = "nosniff"
  ngx.header["Content-Security-Policy"] = "default-src 'none'; script-src 'nonce-" .. nonce ..
    "'; style-src 'nonce-" .. nonce .. "'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'"
  ngx.update_time()
  ngx.print(page.render(views(), { nonce = nonce, now = ngx.now() }))
end

--- access phase of GET /files/<name>: only the files this worker downloaded are served (by
--- nginx itself, from the path set here), no other file of the download folder.
function M.file_access(name)
  local path = downloaded[name or ""]
  if not path then return ngx.exit(404) end
  ngx.var.taskapi_file = path
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
