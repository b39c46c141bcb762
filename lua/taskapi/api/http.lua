-- taskapi.api.http: one call of a provider's API: the request (URL, the client's prebuilt headers,
-- a JSON body), the transfer through taskapi.run.backend, the response turned into data or an
-- error, and the retries of transient failures (transport, timeout, 5xx, 429) with backoff
-- that honours Retry-After. Permanent failures (400, 401, 403, 404) return at once. A request that
-- may create a paid task is retried only when the server cannot have acted on it.
local backend = require "taskapi.run.backend"
local errors = require "taskapi.errors"
local provider = require "taskapi.api.provider"
local json = require "taskapi.json"
local secret = require "taskapi.api.secret"

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

-- HTTP statuses by what the server may have done (as Tripo's JavaScript SDK classes them).
local CLEAN_STATUS = { [429] = true, [503] = true }
local UNKNOWN_STATUS = { [408] = true, [425] = true, [500] = true, [502] = true, [504] = true }

--- What a failure says about the request: "clean" (the server did nothing: not connected, not
--- resolved, connect timeout with nothing sent, 429, 503), "unknown" (it may have acted: reset
--- or timeout after the request went out, 408, 425, 500, 502, 504, a 2xx answer that does not
--- decode or says "server error"), or "fatal" (anything else: retrying cannot help).
function M.failure_class(err)
  local st = err.status
  if st then
    if CLEAN_STATUS[st] then return "clean" end
    if UNKNOWN_STATUS[st] then return "unknown" end
    if st >= 200 and st < 300 then
      if err.kind == "rate_limited" then return "clean" end
      if err.retryable then return "unknown" end
    end
    return "fatal"
  end
  if err.kind == "transport" or err.kind == "timeout" then
    if err.sent == false then return "clean" end
    return err.retryable and "unknown" or "fatal"
  end
  return "fatal"
end

-- A billed request (a create) that failed after it may have reached the server: never sent
-- again; the error says so and how to find out.
function M.indeterminate(client, err)
  err.indeterminate = true
  err.retryable = false
  local how = client.def.usage_path and "client:usage() lists the account's recent tasks" or
    "the provider's console lists the account's tasks"
  err.message = tostring(err.message) .. " -- the task may have been created (and billed): it was not sent again; " ..
    how .. " (and a ledger, when the client has one, keeps the intent)"
  return err
end

-- After failed attempt number `attempt` (0-based): returns the error to give up with, or
-- nil after sleeping the backoff before the next attempt. billed: the request may create a
-- paid task, so only a clean failure is retried.
local function after_failure(client, err, attempt, task_id, limit, before_retry, billed)
  err = errors.redact(errors.adopt(err), secret.get(client).key)
  if task_id and not err.task_id then err.task_id = task_id end
  if billed then
    local class = M.failure_class(err)
    if class == "unknown" then return M.indeterminate(client, err) end
    if class == "fatal" then
      err.retryable = false
      return err
    end
    err.retryable = true -- clean: nothing was done, safe to send again
  end
  if not err.retryable or attempt >= limit then return err end
  if err.retry_after and err.retry_after > client.max_retry_after then return err end
  local delay = M.backoff(client, attempt + 1, err.retry_after)
  -- before_retry(err, n, delay) returning false gives up (download: past its deadline)
  if before_retry and before_retry(err, attempt + 1, delay) == false then return err end
  backend.sleep(client, delay)
  return nil
end

-- The one retry loop: performs req until decide(res, arg, task_id) returns a value (returned
-- with up to two more) or a failure is final (returned as nil, err). decide returns nil, err
-- for an answer that is a failure (err.retryable says whether to try again). Arguments rather
-- than a context table, so an API call allocates no closure or table for its retries.
local function perform(client, req, decide, arg, task_id, retries, billed, before_retry, on_progress)
  local attempt = 0
  while true do
    local res, err = backend.request(client, req, on_progress)
    if res then
      local a, b, c = decide(res, arg, task_id)
      if a ~= nil then return a, b, c end
      err = b
    end
    err = after_failure(client, err, attempt, task_id, retries or client.retries, before_retry, billed)
    if err then return nil, err end
    attempt = attempt + 1
  end
end

--- Performs req (a table from M.request) with the client's retry policy. decide(res)
--- returns value(s) on success or nil, err; err.retryable says whether to try again.
--- ctx (optional): task_id (named in errors), retries (instead of the client's),
--- before_retry(err, n, delay) (false gives up), on_progress(done, total).
--- Returns what decide returned, or nil, err.
function M.with_retries(client, req, decide, ctx)
  if not ctx then return perform(client, req, decide) end
  return perform(client, req, decide, nil, ctx.task_id, ctx.retries, false, ctx.before_retry, ctx.on_progress)
end

--- The one request builder: req (a transfer table of the C module's or the cosocket
--- transport's) with the client's transport settings added: user agent, CA file, insecure,
--- the stall limit (stall_time as low_speed_time), and the provider's trace header. Every
--- request a client makes (API calls, uploads, presigned PUTs, downloads) is built here, so
--- none can leave a setting out; a setting the client does not have adds nothing to the
--- table. Returns req.
function M.request(client, req)
  req.user_agent, req.ca_file, req.insecure = client.user_agent, client.ca_file, client.insecure
  req.low_speed_time, req.trace_header = client.stall_time, client.def.trace_header
  return req
end

-- An API answer through the provider's envelope check (decide of perform).
local function unwrap(res, def, task_id)
  return provider.unwrap(def, res, task_id)
end

-- Path templates compiled once into {literal, name, literal, name, ..., literal}.
local compiled = {}

local function compile(template)
  local c = compiled[template]
  if c then return c end
  c = {}
  local pos = 1
  while true do
    local a, b, name = template:find("{(%w+)}", pos)
    if not a then break end
    c[#c + 1] = template:sub(pos, a - 1)
    c[#c + 1] = name
    pos = b + 1
  end
  c[#c + 1] = template:sub(pos)
  compiled[template] = c
  return c
end

local function expand(template, vars)
  local c = compile(template)
  if #c == 1 then return c[1] end
  if #c == 3 then return c[1] .. (vars[c[2]] or "") .. c[3] end
  local out = { c[1] }
  for i = 2, #c, 2 do
    out[i] = vars[c[i]] or ""
    out[i + 1] = c[i + 1]
  end
  return table.concat(out)
end

-- A client's URL of a template whose only placeholder (if any) is filled with `value`:
-- base_url and the literal parts joined once per client and template.
local prefixes = setmetatable({}, { __mode = "k" }) -- client -> template -> {prefix, suffix}

local function url_of(client, template, vars)
  if type(vars) == "table" then return client.base_url .. expand(template, vars) end
  local per = prefixes[client]
  if not per then
    per = {}
    prefixes[client] = per
  end
  local p = per[template]
  if not p then
    local c = compile(template)
    if #c > 3 then return client.base_url .. expand(template, { id = vars }) end
    p = { client.base_url .. c[1], c[3] or "", c[2] }
    per[template] = p
  end
  if p[3] == nil then return p[1] end
  if p[3] ~= "id" then return p[1] .. p[2] end
  return p[1] .. (vars or "") .. p[2]
end

--- One API call: method, a path template of the provider's ({id} and the like filled from
--- vars: a table, or one string for {id}), an optional body table (encoded as JSON, integers
--- exact; or a string of JSON, sent as it is). Returns data, trace_id.
--- retries: overrides the client's count (wait passes 0: it retries on its own schedule).
--- billed: the call may create a paid task (a create): it goes over a fresh connection (so
--- libcurl cannot resend it on its own) and is retried only after a clean failure.
--- timeout: caps the client's timeout for this request (a wait passes the time it has left).
function M.call(client, method, template, vars, body, task_id, retries, billed, timeout)
  local s = secret.get(client)
  local req = M.request(client, {
    method = method, url = url_of(client, template, vars), headers = s.headers,
    json = true, timeout = timeout and timeout < client.timeout and timeout or client.timeout,
    response_headers = false, -- nothing reads res.headers of an API call
  })
  req.max_body = client.max_body
  if body ~= nil then
    local text, err = body, nil
    if type(body) ~= "string" then text, err = json.encode(body) end -- a string is JSON already
    if not text then return errors.invalid("request body: " .. tostring(err)) end
    req.body = text
    req.headers = s.json_headers
  end
  if billed then req.fresh_connect = true end
  return perform(client, req, unwrap, client.def, task_id, retries, billed)
end

--- A multipart upload: POST of parts (the C module's req.mime array; files are streamed from
--- disk by libcurl, never read into Lua) to a path of the provider's. Retried like any call
--- (the parts are sent again from the file). Returns data, trace_id.
function M.upload(client, template, parts)
  local s = secret.get(client)
  local req = M.request(client, {
    method = "POST", url = client.base_url .. expand(template, {}), headers = s.headers, json = true,
    mime = parts, timeout = client.timeout, max_body = client.max_body,
  })
  return perform(client, req, unwrap, client.def)
end

return M
