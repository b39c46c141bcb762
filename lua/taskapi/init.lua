-- taskapi: the public entry point. Clients come from taskapi.client; the coroutine scheduler
-- (run, spawn, sleep, gather) from taskapi.run.scheduler; errors from taskapi.errors.
local core = require "taskapi.core"
local errors = require "taskapi.errors"
local client = require "taskapi.client"
local scheduler = require "taskapi.run.scheduler"

local M = {
  _VERSION = "taskapi " .. core.version,
  version = core.version,
  null = core.null,
  errors = errors,
}

core.set_error_metatable(errors.Error)

--- taskapi.new{provider=, api_key=, base_url=, timeout=, retries=, ...} -> client | nil, err
M.new = client.new

M.run = scheduler.run
M.spawn = scheduler.spawn
M.sleep = scheduler.sleep
M.gather = scheduler.gather

M.webhook = require "taskapi.webhook" -- verify(secret, headers, body), new{secret=, store=}

-- Inside OpenResty, HTTP and sleeps go through nginx's event loop.
if ngx and ngx.config and ngx.config.subsystem then require "taskapi.run.ngx" end

--- Builds an error value of the library's kind (for provider definitions and tests).
M.error = errors.new

return M
