-- spec/openresty/cosocket_app.lua: the handler of the nginx worker that spec/openresty/
-- cosocket_spec.lua drives (loaded with dofile by init_by_lua). POST /do with a JSON body
-- {client = <taskapi.new options>?, steps = [...]} runs each step in this worker's content
-- handler, in order, and answers {results = [...]}. Steps:
--   {op = "transfer", req = {...}}   the engine's transfer inside nginx (taskapi.run.ngx), as an API
--                                    call or a download takes it
--   {op = "transfer_raising", req}   a transfer whose on_progress raises once bytes arrived
--                                    (result: raised = the error's text)
--   {op = "parallel", n, cap, req}   n downloads of req at once with the worker's cap of
--                                    libcurl transfers at cap (result: ok = how many gave 200)
--   {op = "status", id = "..."}      client:status(id)
--   {op = "create", params = {...}}  client:create(params)
--   {op = "both", req = {...}}       the request through the C module (m:request, blocking) and
--                                    through taskapi.run.cosocket: {curl = res, cos = res}
-- Each result: {res = {...}} or {err = {kind, message, retryable, sent, status, indeterminate}},
-- and seconds (wall clock of the step).
local cjson = require "cjson.safe"

local M = {}

local function err_of(e)
  if type(e) ~= "table" then return { kind = "?", message = tostring(e) } end
  return { kind = e.kind, message = e.message, retryable = e.retryable, sent = e.sent, status = e.status,
    indeterminate = e.indeterminate, text = tostring(e) }
end

local function res_of(r)
  return { status = r.status, json = r.json, json_error = r.json_error, body = r.body, content_type = r.content_type,
    trace_id = r.trace_id, retry_after = r.retry_after, redirects = r.redirects, headers = r.headers,
    effective_url = r.effective_url, bytes = r.bytes, path = r.path }
end

function M.handle()
  ngx.req.read_body()
  local input = cjson.decode(ngx.req.get_body_data() or "")
  if type(input) ~= "table" then
    ngx.status = 400
    return ngx.say("body must be JSON")
  end
  local client, cerr
  if input.client then
    client, cerr = require("taskapi").new(input.client)
    if not client then
      ngx.status = 400
      return ngx.say(tostring(cerr))
    end
  end
  local engine = require "taskapi.run.ngx"
  local results = {}
  for i, step in ipairs(input.steps or {}) do
    ngx.update_time()
    local t0 = ngx.now()
    local out = {}
    if step.op == "transfer" then
      local res, err = engine.transfer(step.req)
      if res then out.res = res_of(res) else out.err = err_of(err) end
    elseif step.op == "both" then
      -- the same request through the C module (blocking: a spec only) and over cosockets
      local m = require("taskapi.core").multi()
      local a, aerr = m:request(step.req)
      m:close()
      local b, berr = require("taskapi.run.cosocket").request(step.req)
      out.curl = a and res_of(a) or { err = err_of(aerr) }
      out.cos = b and res_of(b) or { err = err_of(berr) }
    elseif step.op == "transfer_raising" then
      -- a download whose on_progress raises once bytes arrived: the error comes back here
      local ok, err = pcall(engine.transfer, step.req, function(done) if done > 0 then error("boom in ngx", 0) end end)
      out.raised = not ok and tostring(err) or nil
    elseif step.op == "parallel" then
      -- step.n downloads at once (light threads) with the worker's cap at step.cap
      local ngxe = require "taskapi.run.ngx"
      ngxe.MAX_TRANSFERS = step.cap
      local hs, ok_n = {}, 0
      for j = 1, step.n do
        local r = {}
        for k, v in pairs(step.req) do r[k] = v end
        r.path, r.part = step.req.path .. j, step.req.path .. j .. ".part"
        hs[j] = ngx.thread.spawn(function() return engine.transfer(r) end)
      end
      for j = 1, step.n do
        local _, res, err = ngx.thread.wait(hs[j])
        if type(res) == "table" and res.status == 200 then ok_n = ok_n + 1 else out.err = err_of(err) end
      end
      ngxe.MAX_TRANSFERS = 64
      out.ok = ok_n
    elseif step.op == "status" then
      local task, err = client:status(step.id)
      if task then out.task = { id = task.id, state = task.state, trace_id = task.trace_id } else out.err = err_of(err) end
    elseif step.op == "create" then
      local id, err = client:create(step.params)
      if id then out.id = id else out.err = err_of(err) end
    else
      out.err = { kind = "spec", message = "unknown op " .. tostring(step.op) }
    end
    ngx.update_time()
    out.seconds = ngx.now() - t0
    results[i] = out
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode { results = results, driving = engine.driving() })
end

return M
