-- taskapi.fake.model.router: one request from a host to its answer: the request's context
-- (key, account, clock), the webhook and control routes, the log entry, the scripted request
-- faults, then the file host, the storage and the provider APIs (Model.APIS, one per
-- provider file, each found by its path prefix).
local B = require "taskapi.fake.model.base"

local P = { Model = {} }
local Model = P.Model

local function bearer(headers)
  local auth = headers.authorization
  if type(auth) ~= "string" then return nil, false end
  return auth:match("^%s*[Bb]earer%s+(%S+)%s*$"), true
end

-- The API whose prefix the path is under, and the path after it; nil when none.
function Model:api_of(path)
  for _, api in ipairs(self.APIS) do
    if path:sub(1, #api.prefix + 1) == api.prefix .. "/" then return api, path:sub(#api.prefix + 1) end
  end
  return nil
end

-- The API named name ("tripo" (V3), "tripo-v2", "sellerpic").
function Model:api_named(name)
  for _, api in ipairs(self.APIS) do
    if api.name == name then return api end
  end
  error("taskapi.fake.model: no API named " .. tostring(name))
end

--- What a request is for the faults: "create" or "upload" (or nil), and its API's name.
function Model:request_kind(ctx)
  local p, m = ctx.path, ctx.method
  if m == "PUT" and p:sub(1, 9) == "/storage/" then return "upload", "tripo" end
  if m ~= "POST" then return nil end
  local api, sub = self:api_of(p)
  local kind = api and api.kind(sub)
  if not kind then return nil end
  return kind, api.name
end

--- Answers one request (see the top of taskapi.fake.model for the shapes).
function Model:handle(req)
  local headers = {}
  for k, v in pairs(req.headers or {}) do headers[tostring(k):lower()] = v end
  local ctx = {
    method = tostring(req.method or "GET"):upper(),
    path = req.path or "/",
    query = req.query or {},
    headers = headers,
    body = req.body,
    base = (req.base_url or self.base_url):gsub("/+$", ""),
    now = self:now(),
  }
  local key, has_auth = bearer(headers)
  ctx.key = key
  ctx.owner = key and self.keys[key] or nil
  -- [webhook] signed deliveries (taskapi.fake.webhook): /_fake/webhook, arming its sender
  local wh = require("taskapi.fake.webhook").on_request(self, ctx)
  if wh then return wh end
  local p = ctx.path
  if p:sub(1, 7) == "/_fake/" then return self:route_control(ctx) end

  self:log_request(ctx, has_auth, req.connection)

  local fault, fapi = self:take_request_fault(ctx)
  if fault then
    if ctx.owner and fault.created then
      return self:apply_request_fault(fault, fapi, self:route(ctx))
    end
    if ctx.owner or p:sub(1, 9) == "/storage/" then
      -- counted as received; nothing was made
      local kind = self:request_kind(ctx)
      if kind == "create" then self:count_create(ctx, fapi) end
      return self:apply_request_fault(fault, fapi, nil)
    end
  end
  return self:route(ctx)
end

--- Routes one logged request (no control route) to its API.
function Model:route(ctx)
  local p = ctx.path
  local token, name = p:match("^/files/([^/]+)/([^/]+)$")
  if token then return self:serve_file(ctx, token, name) end
  if p:sub(1, 9) == "/storage/" then return self:serve_storage(ctx) end
  local api = self:api_of(p)
  if api then return api.serve(self, ctx) end
  if p:sub(1, 7) == "/files/" then return B.denied() end
  return B.text_resp(404, "not found\n")
end

return P
