-- taskapi: the public entry point. Clients come from taskapi.client; the coroutine scheduler
-- (run, spawn, sleep, gather) from taskapi.scheduler; errors from taskapi.errors.
local core = require "taskapi.core"
local errors = require "taskapi.errors"
local client = require "taskapi.client"

local M = {
  _VERSION = "taskapi " .. core.version,
  version = core.version,
  null = core.null,
  errors = errors,
}

core.set_error_metatable(errors.Error)

--- taskapi.new{provider=, api_key=, base_url=, timeout=, retries=, ...} -> client | nil, err
M.new = client.new

--- Builds an error value of the library's kind (for provider definitions and tests).
M.error = errors.new

return M
