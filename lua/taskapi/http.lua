-- taskapi.http: one call of a provider's API: the request (URL, the client's prebuilt headers,
-- a JSON body), the transfer through the engine, the response turned into data or an error,
-- and the retries of transient failures (transport, timeout, 5xx, 429) with backoff that
-- honours Retry-After. Permanent failures (400, 401, 403, 404) return at once.
local engine = require "taskapi.engine"
local errors = require "taskapi.errors"
local provider = require "taskapi.provider"
local json = require "taskapi.json"
local secret = require "taskapi.secret"

local M = {}

--- The delay before retry number `attempt` (1-based): exponential from client.backoff,
--- with jitter, capped at client.max_backoff; a server's Retry-After wins when it is longer.
function M.backoff(client, attempt, retry_after)
  local base = client.backoff * 2 ^ (attempt - 1)
  if base > client.max_backoff then base = client.max_backoff end
  local d = base * (0.5 + 0.5 * math.random())
  if retry_after and retry_after > d then d = retry_after end
  return d
end

--- Performs req (a transfer table) with the client's retry policy. decide(res) returns
--- value(s) on success or nil, err; err.retryable says whether to try again.
--- Returns what decide returned, or nil, err.
function M.with_retries(client, req, decide, ctx)
  local attempt = 0
  while true do
    local res, err = engine.request(client, req, ctx and ctx.on_progress)
    local a, b, c
    if res then
      a, b, c = decide(res)
      if a ~= nil then return a, b, c end
      err = b
    end
    err = errors.redact(errors.adopt(err), secret.get(client).key)
    if ctx and ctx.task_id and not err.task_id then err.task_id = ctx.task_id end
    local limit = ctx and ctx.retries or client.retries
    if not err.retryable or attempt >= limit then return nil, err end
    if err.retry_after and err.retry_after > client.max_retry_after then return nil, err end
    attempt = attempt + 1
    if ctx and ctx.before_retry then ctx.before_retry(err, attempt) end
    engine.sleep(client, M.backoff(client, attempt, err.retry_after))
  end
end

local function expand(template, vars)
  return (template:gsub("{(%w+)}", function(k) return vars[k] or "" end))
end
M.expand = expand

--- One API call: method, a path template of the provider's ({id} and the like filled from
--- vars), an optional body table (encoded as JSON, integers exact). Returns data, trace_id.
--- retries: overrides the client's count (wait passes 0: it retries on its own schedule).
function M.call(client, method, template, vars, body, task_id, retries)
  local s = secret.get(client)
  local req = {
    method = method, url = client.base_url .. expand(template, vars or {}), headers = s.headers,
    json = true, timeout = client.timeout, user_agent = client.user_agent, ca_file = client.ca_file,
    insecure = client.insecure, max_body = client.max_body, low_speed_time = client.stall_time,
  }
  if body ~= nil then
    local text, err = json.encode(body)
    if not text then return errors.invalid("request body: " .. tostring(err)) end
    req.body = text
    req.headers = s.json_headers
  end
  local def = client.def
  return M.with_retries(client, req, function(res) return provider.unwrap(def, res, task_id) end,
    { task_id = task_id, retries = retries })
end

--- A multipart upload: POST of parts (the C module's req.mime array; files are streamed from
--- disk by libcurl, never read into Lua) to a path of the provider's. Retried like any call
--- (the parts are sent again from the file). Returns data, trace_id.
function M.upload(client, template, parts)
  local s = secret.get(client)
  local req = {
    method = "POST", url = client.base_url .. expand(template, {}), headers = s.headers, json = true,
    mime = parts, timeout = client.timeout, user_agent = client.user_agent, ca_file = client.ca_file,
    insecure = client.insecure, max_body = client.max_body,
  }
  local def = client.def
  return M.with_retries(client, req, function(res) return provider.unwrap(def, res) end)
end

return M
