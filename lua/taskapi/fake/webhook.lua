-- taskapi.fake.webhook: the fake provider's signed Tripo webhook deliveries. When a Tripo task
-- with a webhook becomes final, the fake POSTs Tripo's envelope
--   {"id": "<task id>:<type>", "type": "task.completed" | "task.failed", "created_at", "data": <task>}
-- (data: the task as the fake renders it for status reads) with Tripo-Webhook-Signature
-- (t=<now>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>), Tripo-Webhook-Id,
-- Tripo-Webhook-Delivery and Tripo-Webhook-Event, to http://127.0.0.1:PORT/... only.
--
-- Configuration: per task, `webhook = {url=, secret=, ...}` in its spec; for the whole fake,
-- POST /_fake/webhook {url=, secret=, ...} (DELETE turns it off). Knobs: duplicate = true (the
-- same delivery, same id, sent twice), bad_signature = true (signed with another secret),
-- stale = true (a timestamp 10 minutes old), delay = s (after the task's final time).
-- GET /_fake/webhook lists what was sent: {delivery=, task_id=, type=, fault=, at=, status=,
-- error=}; POST /_fake/reset forgets the configuration and that list too.
--
-- Host-agnostic part: M.sign, M.envelope, M.due(model, now) (the deliveries now due, each
-- once). The nginx host: one ngx.timer.every(M.PERIOD) scanning the tasks while webhooks are
-- in use (armed by the first configuring request), each delivery POSTed by plain
-- ngx.socket.tcp HTTP/1.1 in its own timer. Model:handle calls M.on_request first.
local json = require "taskapi.json"

local M = {}

M.PERIOD = 0.1          -- seconds between two scans of the tasks (nginx host)
M.WEBHOOK_ID = "wh_fake_0001"
M.STALE = 600           -- seconds the timestamp of a `stale` delivery lies in the past

local FINAL_EVENT = { success = "task.completed" } -- any other final status: task.failed

local function state(model)
  local s = model._webhook
  if not s then
    s = { config = nil, sent = setmetatable({}, { __mode = "k" }), log = {}, counter = 0, armed = false }
    model._webhook = s
  end
  return s
end

local function iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

--- The Tripo-Webhook-Signature value of body signed with secret at Unix time t.
function M.sign(secret, body, t)
  local core = require "taskapi.core"
  t = string.format("%d", math.floor(t))
  return "t=" .. t .. ",v1=" .. core.hmac_sha256(secret, t .. "." .. body)
end

-- The task object of t as the fake renders it for a status read (V3 once the fake has it).
local function render(model, t, ctx)
  if model.tripo3_data then return model:tripo3_data(t, ctx) end
  return model:tripo_data(t, ctx)
end

local function final_time(model, t)
  if model.final_time then return model:final_time(t) end
  return t.created + t.queue + t.run
end

--- The envelope (JSON text) of model task t at ctx {now=, base=}, and its event type.
function M.envelope(model, t, ctx)
  local data = render(model, t, ctx)
  local typ = FINAL_EVENT[data.status] or "task.failed"
  local body = assert(json.encode({ id = t.id .. ":" .. typ, type = typ, created_at = iso8601(ctx.now), data = data }))
  return body, typ
end

-- A webhook url the fake may POST to: http://127.0.0.1[:port]/path (or localhost). -> port, path
local function loopback(url)
  if type(url) ~= "string" then return nil end
  local host, port, path = url:match("^http://([^/:]+):?(%d*)(/?[^#]*)$")
  if host ~= "127.0.0.1" and host ~= "localhost" then return nil end
  port = tonumber(port ~= "" and port or "80")
  if not port or port < 1 or port > 65535 then return nil end
  return port, path ~= "" and path or "/"
end
M.loopback = loopback

local function check_config(c)
  if type(c) ~= "table" then return nil, "webhook must be an object {url=, secret=}" end
  if not loopback(c.url) then return nil, "webhook url must be http://127.0.0.1:PORT/... (the fake sends to loopback only)" end
  if type(c.secret) ~= "string" or c.secret == "" then return nil, "webhook secret must be a non-empty string" end
  return c
end

-- The configuration that applies to task t, or nil.
local function config_of(s, t)
  local c = t.spec and t.spec.webhook
  if type(c) == "table" then return check_config(c) end
  return s.config
end

--- The deliveries due at `now` (model time), each task's once: an array of
--- {url=, port=, path=, headers=, body=, record=} (record: the entry of the sent log, to be
--- completed with status or error by whoever sends it).
function M.due(model, now, base)
  local s = state(model)
  now = now or model:now()
  local out = {}
  for id, t in pairs(model.tasks) do
    if t.provider == "tripo" and not s.sent[t] then
      local c = config_of(s, t)
      if c and now >= final_time(model, t) + (tonumber(c.delay) or 0) then
        s.sent[t] = true
        local body, typ = M.envelope(model, t, { now = now, base = base or s.base or model.base_url })
        local port, path = loopback(c.url)
        local signed_at = c.stale and now - M.STALE or now
        local secret = c.bad_signature and c.secret .. "-not-it" or c.secret
        s.counter = s.counter + 1
        local delivery = string.format("dlv_fake_%08d", s.counter)
        local fault = c.bad_signature and "bad_signature" or c.stale and "stale" or nil
        local headers = {
          ["Content-Type"] = "application/json",
          ["User-Agent"] = "taskapi-fake-webhook",
          ["Tripo-Webhook-Signature"] = M.sign(secret, body, os.time() - (now - signed_at)),
          ["Tripo-Webhook-Id"] = M.WEBHOOK_ID,
          ["Tripo-Webhook-Delivery"] = delivery,
          ["Tripo-Webhook-Event"] = typ,
        }
        local times = c.duplicate and 2 or 1
        for i = 1, times do
          local record = { delivery = delivery, task_id = id, type = typ, fault = fault or (i > 1 and "duplicate" or nil), at = now }
          s.log[#s.log + 1] = record
          out[#out + 1] = { url = c.url, port = port, path = path, headers = headers, body = body, record = record }
        end
      end
    end
  end
  return out
end

----------------------------------------------------------------------------------------------
-- nginx host

-- POSTs one delivery to 127.0.0.1 with a plain HTTP/1.1 request; returns the status or nil, err.
local function post(d)
  local sock = ngx.socket.tcp()
  sock:settimeout(5000)
  local ok, err = sock:connect("127.0.0.1", d.port)
  if not ok then return nil, "connect: " .. tostring(err) end
  local lines = { "POST " .. d.path .. " HTTP/1.1", "Host: 127.0.0.1:" .. d.port, "Connection: close",
    "Content-Length: " .. #d.body }
  for k, v in pairs(d.headers) do lines[#lines + 1] = k .. ": " .. v end
  ok, err = sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. d.body)
  if not ok then sock:close() return nil, "send: " .. tostring(err) end
  local line
  line, err = sock:receive("*l")
  if not line then sock:close() return nil, "receive: " .. tostring(err) end
  local status = tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
  sock:close()
  if not status then return nil, "not an HTTP answer: " .. line:sub(1, 60) end
  return status
end

local function send(premature, d)
  if premature then return end
  local status, err = post(d)
  d.record.status, d.record.error = status, err
end

local function scan(premature, model)
  if premature then return end
  local list = M.due(model)
  for i = 1, #list do
    -- one after another in one timer, so that a duplicate arrives after its first copy
    send(false, list[i])
  end
end

local function arm(model, s, ctx)
  if s.armed then return end
  s.base = ctx.base
  if not (ngx and ngx.timer and ngx.timer.every) then return end -- in-process: M.due by hand
  local ok, err = ngx.timer.every(M.PERIOD, function(premature)
    -- deliveries go out from their own timer: a slow receiver never holds the scan
    if not premature then ngx.timer.at(0, scan, model) end
  end)
  if ok then s.armed = true else ngx.log(ngx.ERR, "fake webhook: cannot start the timer: ", err) end
end

local function json_resp(status, value)
  return { status = status, headers = { ["Content-Type"] = "application/json" }, body = assert(json.encode(value)) }
end

--- Called first by Model:handle: answers /_fake/webhook, and arms the sender when a request
--- configures a webhook (the control route, or a task spec with a `webhook`). nil otherwise.
function M.on_request(model, ctx)
  if ctx.method == "GET" and ctx.path == "/_fake/webhook" then
    local s = state(model)
    local log = json.array({})
    for i, r in ipairs(s.log) do log[i] = r end
    return json_resp(200, { config = s.config and { url = s.config.url } or json.null, deliveries = log })
  end
  if ctx.method == "DELETE" and ctx.path == "/_fake/webhook" then
    state(model).config = nil
    return json_resp(200, { ok = true })
  end
  if ctx.method ~= "POST" then return nil end
  if ctx.path == "/_fake/reset" then -- the model forgets its tasks: forget the webhook too
    local s = state(model)
    s.config, s.log, s.sent = nil, {}, setmetatable({}, { __mode = "k" })
    return nil
  end
  if ctx.path == "/_fake/webhook" then
    local c, err = require("taskapi.fake.model").decode_json(ctx.body or "")
    local ok, cerr = check_config(c)
    if not ok then return json_resp(400, { error = cerr or tostring(err) }) end
    local s = state(model)
    s.config = c
    arm(model, s, ctx)
    return json_resp(200, { ok = true })
  end
  local body = ctx.body
  if type(body) == "string" and #body < 65536 and body:find('"webhook"', 1, true) then
    arm(model, state(model), ctx)
  end
  return nil
end

return M
