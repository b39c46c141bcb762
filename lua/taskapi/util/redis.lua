-- taskapi.util.redis: a Redis client with one API on every runtime.
--
--   local redis = require "taskapi.util.redis"
--   local r, err = redis.connect("redis://127.0.0.1:6379/0?prefix=jobs")  -- or a table
--   r:call("SET", "k", "v")           -> reply | nil, err
--   r:pipeline({{"INCR", "n"}, {"GET", "k"}}) -> {reply, ...} | nil, err
--   r:eval(script, keys, args)        -> reply | nil, err   (EVALSHA; loads it on NOSCRIPT)
--   r:close()                         -> true (idempotent)
--   redis.null                        -> the nil reply (core.redis_null; equal to ngx.null)
--
-- The URL: redis://HOST[:PORT][/DB][?prefix=NAME&timeout=SECONDS] (port 6379, db 0, no
-- prefix, timeout 5 s; the prefix is only carried for the caller: r.prefix). A table takes
-- host, port, db, prefix, timeout.
--
-- Replies: integer -> integer, status and bulk string -> string, nil -> redis.null, array ->
-- array (nested). An error reply of call or eval is nil, err {kind = "server", message =
-- "redis: ERR ...", code = "ERR", retryable (LOADING, BUSY, TRYAGAIN, MASTERDOWN)}; in an
-- array or a pipeline's slot that err table is the value. A connection that fails (refused,
-- reset, closed, timed out) is nil, err {kind = "transport", message = "redis HOST:PORT:
-- ...", retryable = true}; the call is not retried (it may have run), the next call
-- reconnects (and selects the db again).
--
-- Two backends, chosen per call. Inside nginx, in a phase with cosockets (content, access,
-- rewrite, timer, ...), resty.redis (Debian's lua-nginx-redis installs it as nginx.redis;
-- OpenResty's own resty.redis is taken when there) on a cosocket from nginx's keepalive pool
-- (set_keepalive after each call): the C binding would block the worker's event loop, and a
-- cosocket cannot outlive the request or timer that opened it. Everywhere else (plain Lua,
-- LuaJIT, busted, nginx's init phases) taskapi.core's binding of Debian's libhiredis
-- (src/redis.c): one blocking connection per object, kept open.
local core = require "taskapi.core"
local errors = require "taskapi.errors"

local unpack = table.unpack or unpack

local M = {}

M.null = core.redis_null

--- s as one part of a Redis key: "%" and ":" escaped (the ledger's and the fleet's keys).
function M.key_part(s) return (tostring(s):gsub("%%", "%%25"):gsub(":", "%%3A")) end
M.PORT = 6379
M.TIMEOUT = 5
M.POOL_IDLE = 60   -- seconds a pooled cosocket stays open (OpenResty)
M.POOL_SIZE = 64   -- cosockets kept per worker and server (OpenResty)

-- phases in which nginx gives cosockets (as taskapi.run.ngx's YIELDABLE)
local COSOCKET_PHASES = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, preread = true,
}

local function bad(what) return errors.invalid("redis: " .. what) end

local function check_name(s)
  return type(s) == "string" and s ~= "" and #s <= 200 and not s:find("[%c%s]")
end

--- redis.parse(url_or_opts) -> {host=, port=, db=, prefix=, timeout=} | nil, err
function M.parse(spec)
  local o = {}
  if type(spec) == "table" then
    for k, v in pairs(spec) do
      if k ~= "host" and k ~= "port" and k ~= "db" and k ~= "prefix" and k ~= "timeout" then
        return bad("unknown option '" .. tostring(k):sub(1, 40) .. "' (known: host, port, db, prefix, timeout)")
      end
      o[k] = v
    end
    o.host = o.host or "127.0.0.1"
  elseif type(spec) == "string" then
    local rest = spec:match("^redis://(.*)$")
    if not rest then return bad("the URL must start with redis:// (redis://HOST:PORT/DB?prefix=NAME)") end
    local auth = rest:match("^([^/?]*)@")
    if auth then return bad("a user or password in the URL is not supported") end
    local hostport, path, query = rest:match("^([^/?]*)(/?[^?]*)%??(.*)$")
    local host, port = hostport:match("^%[([^%]]+)%]:?(.*)$") -- [v6]:port
    if not host then host, port = hostport:match("^([^:]*):?(.*)$") end
    if host == "" then return bad("the URL names no host (redis://HOST:PORT/DB)") end
    o.host = host
    if port ~= "" then
      if not port:match("^%d+$") then return bad("the port '" .. port:sub(1, 20) .. "' is not a number") end
      o.port = tonumber(port)
    end
    if path ~= "" and path ~= "/" then
      local db = path:match("^/(%d+)$")
      if not db then return bad("the path '" .. path:sub(1, 40) .. "' is not a database number (/0, /1, ...)") end
      o.db = tonumber(db)
    end
    if query ~= "" then
      for pair in query:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]+)=(.*)$")
        if k == "prefix" then o.prefix = v
        elseif k == "timeout" then
          o.timeout = tonumber(v)
          if not o.timeout then return bad("timeout '" .. v:sub(1, 20) .. "' is not a number of seconds") end
        else
          return bad("unknown URL parameter '" .. tostring(k or pair):sub(1, 40) .. "' (known: prefix, timeout)")
        end
      end
    end
  else
    return bad("connect expects a redis:// URL or an options table, got " .. type(spec))
  end
  if type(o.host) ~= "string" or not check_name(o.host) or #o.host > 253 then return bad("'host' must be a host name or address") end
  o.port = o.port or M.PORT
  if type(o.port) ~= "number" or o.port % 1 ~= 0 or o.port < 1 or o.port > 65535 then
    return bad("the port must be a whole number from 1 to 65535")
  end
  o.db = o.db or 0
  if type(o.db) ~= "number" or o.db % 1 ~= 0 or o.db < 0 or o.db > 2147483647 then
    return bad("the database must be a whole number from 0")
  end
  if o.prefix ~= nil and not check_name(o.prefix) then
    return bad("the prefix must be 1 to 200 characters without spaces or control characters")
  end
  o.timeout = o.timeout or M.TIMEOUT
  if type(o.timeout) ~= "number" or not (o.timeout > 0 and o.timeout <= 86400) then
    return bad("the timeout must be more than 0 and at most 86400 seconds")
  end
  return o
end

-- The ngx backend's wording of a cosocket failure, as the C binding words it.
local function transport(c, why)
  if why == "timeout" then why = "timed out after " .. c.timeout .. " s"
  elseif why == "closed" then why = "the server closed the connection" end
  return errors.new("transport", c.where .. ": " .. tostring(why), { retryable = true })
end

local RETRYABLE = { LOADING = true, BUSY = true, TRYAGAIN = true, MASTERDOWN = true }

local function server_error(text)
  local code = text:match("^(%S+)")
  return errors.new("server", "redis: " .. text:sub(1, 560), { code = code, retryable = RETRYABLE[code] == true })
end

-- resty.redis's replies in the C binding's shapes: an error reply {false, msg} in an array
-- becomes the err table (ngx.null is already redis.null: both are the light userdata NULL).
local function from_resty(v)
  if type(v) ~= "table" then return v end
  if v[1] == false and type(v[2]) == "string" and v[3] == nil then return server_error(v[2]) end
  for i = 1, #v do
    local x = v[i]
    if type(x) == "table" then v[i] = from_resty(x) end
  end
  return v
end

-- An argument as it goes on the wire (resty.redis would tostring() a number: 2^53 -> 9.007e+15).
local function arg_string(v, i, where)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if v % 1 == 0 and v > -9.2e18 and v < 9.2e18 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  return nil, errors.new("invalid_argument", where .. "argument " .. i .. " is a " .. t .. " (strings or numbers)")
end

local Conn = {}
Conn.__index = Conn
M.Conn = Conn

function Conn.__tostring(c)
  return "taskapi redis connection (" .. c.where .. "/" .. c.db .. ")"
end

local function in_cosocket_phase()
  local n = rawget(_G, "ngx")
  return n ~= nil and type(n.get_phase) == "function" and COSOCKET_PHASES[n.get_phase()] == true
end

local resty_mod
local function resty()
  if resty_mod == nil then
    local ok, m = pcall(require, "resty.redis")
    if not ok then ok, m = pcall(require, "nginx.redis") end
    resty_mod = ok and m or false
  end
  return resty_mod
end

-- The process that owns a C connection: inside nginx, a connection made before the fork
-- (init_by_lua) would be shared by every worker; each worker makes its own.
local function owner()
  local n = rawget(_G, "ngx")
  return n and n.worker and n.worker.pid and n.worker.pid() or 0
end

local function closed(c)
  return nil, errors.new("transport", c.where .. ": the connection is closed", { retryable = false })
end

-- The C connection, opened (and its db selected) when there is none.
function Conn:_c()
  if self.closed then return closed(self) end
  if self.conn and self.owner == owner() then return self.conn end
  if self.conn then self.conn:close() end -- (only this process's copy of the socket)
  local conn, err = core.redis_connect(self.host, self.port, self.timeout)
  if not conn then return nil, errors.adopt(err) end
  if self.db ~= 0 then
    local ok, serr = conn:call("SELECT", self.db)
    if not ok then
      conn:close()
      return nil, errors.adopt(serr)
    end
  end
  self.conn, self.owner = conn, owner()
  return conn
end

-- One command on a cosocket: reply | nil, err [, true when the connection broke].
local function resty_call(c, red, argv)
  -- (upper case: resty.redis makes a method of any name, but its own methods are lower case)
  local res, err = red[argv[1]:upper()](red, unpack(argv, 2, #argv))
  if res == nil then return nil, transport(c, err), true end
  if res == false then return nil, server_error(tostring(err)) end
  return from_resty(res)
end

-- Runs fn(red) on a cosocket from the pool (its db selected when new): back to the pool
-- after a complete exchange, closed after a transport error. fn returns value, err, broken.
function Conn:_with_ngx(fn)
  if self.closed then return closed(self) end
  local mod = resty()
  if not mod then return nil, errors.new("transport", self.where .. ": resty.redis is missing (apt-get install lua-nginx-redis)") end
  local red = mod:new()
  red:set_timeout(self.timeout * 1000)
  local ok, err = red:connect(self.host, self.port, { pool = self.pool })
  if not ok then return nil, transport(self, err) end
  if self.db ~= 0 and (red:get_reused_times() or 0) == 0 then -- a new socket: selected first
    local r, serr = resty_call(self, red, { "select", tostring(self.db) })
    if not r then
      red:close()
      return nil, serr
    end
  end
  local v, e, broken = fn(red)
  if broken then
    red:close()
  else -- a reply or an error reply: the exchange is complete
    red:set_keepalive(M.POOL_IDLE * 1000, M.POOL_SIZE)
  end
  return v, e
end

-- The C connection's answer; a transport error drops the connection (the next call reconnects).
function Conn:_after_c(v, err)
  if v == nil and err then
    err = errors.adopt(err)
    if err.kind == "transport" and self.conn then
      self.conn:close()
      self.conn = nil
    end
  end
  return v, err
end

-- argv: an array; every value checked (and numbers written) for the ngx backend.
local function strings(argv, where)
  local out = {}
  for i = 1, #argv do
    local s, err = arg_string(argv[i], i, where)
    if not s then return nil, err end
    out[i] = s
  end
  if #out == 0 then return nil, errors.new("invalid_argument", where .. "no command") end
  return out
end

function Conn:_call(argv)
  if in_cosocket_phase() then
    local a, err = strings(argv, "redis call: ")
    if not a then return nil, err end
    return self:_with_ngx(function(red) return resty_call(self, red, a) end)
  end
  local conn, err = self:_c()
  if not conn then return nil, err end
  return self:_after_c(conn:call(unpack(argv, 1, #argv)))
end

--- r:call(cmd, ...) -> reply | nil, err
function Conn:call(...)
  return self:_call({ ... })
end

--- r:pipeline(cmds) -> {reply or err table, ...} | nil, err (a transport error: none of the
--- replies is known, any of the commands may have run)
function Conn:pipeline(cmds)
  if type(cmds) ~= "table" then return nil, errors.new("invalid_argument", "redis pipeline expects an array of commands") end
  if in_cosocket_phase() then
    local all = {}
    for i, argv in ipairs(cmds) do
      if type(argv) ~= "table" then
        return nil, errors.new("invalid_argument", "redis pipeline: command " .. i .. " is a " .. type(argv) .. " (an array of arguments)")
      end
      local a, err = strings(argv, "redis pipeline: command " .. i .. ", ")
      if not a then return nil, err end
      all[i] = a
    end
    if #all == 0 then return {} end
    return self:_with_ngx(function(red)
      red:init_pipeline(#all)
      for _, a in ipairs(all) do red[a[1]:upper()](red, unpack(a, 2, #a)) end
      local res, err = red:commit_pipeline()
      if not res then return nil, transport(self, err), true end
      return from_resty(res)
    end)
  end
  local conn, err = self:_c()
  if not conn then return nil, err end
  return self:_after_c(conn:pipeline(cmds))
end

-- script text -> its SHA-1 as Redis named it (SCRIPT LOAD); the same on every server
local shas = {}

--- r:eval(script, keys, args) -> reply | nil, err: EVALSHA, loading the script first when
--- this process has not yet (or the server answers NOSCRIPT: restarted, SCRIPT FLUSH).
function Conn:eval(script, keys, args)
  keys, args = keys or {}, args or {}
  local argv = { "EVALSHA", shas[script] or "", #keys }
  for _, k in ipairs(keys) do argv[#argv + 1] = k end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  if shas[script] then
    local v, err = self:_call(argv)
    if v ~= nil or err.code ~= "NOSCRIPT" then return v, err end
  end
  local sha, err = self:_call({ "SCRIPT", "LOAD", script })
  if not sha then return nil, err end
  shas[script] = sha
  argv[2] = sha
  return self:_call(argv)
end

function Conn:close()
  self.closed = true
  if self.conn then self.conn:close() end
  self.conn = nil
  return true
end

--- redis.connect(url_or_opts) -> connection | nil, err. Outside nginx's cosocket phases it
--- connects at once (so a Redis that is not there is an error here); inside them each call
--- takes a pooled cosocket.
function M.connect(spec)
  local o, err = M.parse(spec)
  if not o then return nil, err end
  local c = setmetatable({ host = o.host, port = o.port, db = o.db, prefix = o.prefix, timeout = o.timeout,
    where = "redis " .. o.host .. ":" .. o.port }, Conn)
  c.pool = o.host .. ":" .. o.port .. ":" .. o.db
  if in_cosocket_phase() then
    local ok
    ok, err = c:call("PING")
    if not ok then return nil, err end
  else
    local conn
    conn, err = c:_c()
    if not conn then return nil, err end
  end
  return c
end

return M
