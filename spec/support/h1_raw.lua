-- spec/support/h1_raw.lua: a scripted HTTP/1.1 server inside a private nginx, for specs that
-- pin down a client's wire behaviour against byte-exact answers. Loaded in nginx's Lua VM:
--
--   init_by_lua_block { local h = dofile("<abs>/spec/support/h1_raw.lua"); package.loaded.h1raw = h
--                       h.routes["/x"] = function(c, req) ... end }
--   location / { lua_check_client_abort off; content_by_lua_block { require("h1raw").serve() } }
--
-- serve() takes over the connection (a raw downstream socket) and answers request after
-- request on it by path: route(c, req) writes the whole answer itself (c:send, c:reply) and
-- returns "close" to end the connection (nginx then closes the socket) or nothing to read
-- the next request on the same connection. The connection ends too when the client closes
-- it or stays idle for M.idle seconds.
--   c: sock (the raw socket), id (nginx's connection number), n (requests on it, from 1)
--   req: head (the request line and headers, byte-exact, ending with the empty line),
--        line, method, target, path, query, args (query arguments), headers (lower-case
--        names, last value), body (Content-Length bytes; "Expect: 100-continue" is answered
--        with a 100 Continue first), extra (bytes that came after
--        the head and body within a short wait, for routes that set req.probe; see /echo)
-- Built in: /conn answers "<id> <n>"; /echo answers the request bytes as they came (head,
-- body, anything after them within 0.1 s).
local M = { routes = {}, idle = 2 }

local Conn = {}
Conn.__index = Conn

--- Writes its arguments in order: a string as it is, a number is a pause of that many seconds.
function Conn:send(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "number" then
      ngx.sleep(v)
    else
      local ok, err = self.sock:send(v)
      if not ok then return nil, err end
    end
  end
  return true
end

--- A complete answer: status (200 or "200 OK"), headers (array of "Name: value"), body
--- with Content-Length (unless headers name Content-Length or Transfer-Encoding themselves).
function Conn:reply(status, headers, body)
  body = body or ""
  local t = { "HTTP/1.1 " .. (type(status) == "number" and status .. " X" or status) .. "\r\n" }
  local has_len = false
  for _, h in ipairs(headers or {}) do
    t[#t + 1] = h .. "\r\n"
    local n = h:lower()
    if n:find("^content%-length:") or n:find("^transfer%-encoding:") then has_len = true end
  end
  if not has_len then t[#t + 1] = "Content-Length: " .. #body .. "\r\n" end
  t[#t + 1] = "\r\n"
  t[#t + 1] = body
  return self:send(table.concat(t))
end

local function parse_head(head)
  local line = head:match("^([^\r\n]*)")
  local method, target = line:match("^(%S+) (%S+)")
  target = target or ""
  local path, query = target:match("^([^?]*)%??(.*)$")
  local args = {}
  for k, v in (query or ""):gmatch("([^&=]+)=?([^&]*)") do args[k] = v end
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do headers[name:lower()] = value end
  return { head = head, line = line, method = method, target = target, path = path, query = query,
           args = args, headers = headers, body = "", extra = "" }
end

M.routes["/conn"] = function(c) c:reply(200, nil, c.id .. " " .. c.n) end
M.routes["/echo"] = function(c, req) c:reply(200, nil, req.head .. req.body .. req.extra) end

local function probe(path) return path == "/echo" or M.probe[path] end
M.probe = {} -- other paths whose req.extra is read

function M.serve()
  local head = ngx.req.raw_header() -- the first request: nginx has read its head already
  local sock = assert(ngx.req.socket(true))
  local c = setmetatable({ sock = sock, id = tonumber(ngx.var.connection), n = 0 }, Conn)
  sock:settimeout(M.idle * 1000)
  local read_head = sock:receiveuntil("\r\n\r\n")
  while true do
    if not head then
      local h = read_head()
      if not h then return end
      head = h .. "\r\n\r\n"
    end
    c.n = c.n + 1
    local req = parse_head(head)
    head = nil
    local len = tonumber(req.headers["content-length"] or "0") or 0
    if len > 0 then
      -- a client that waits for an interim answer before a large body (Expect) gets it
      if (req.headers["expect"] or ""):lower() == "100-continue" then
        if not c:send("HTTP/1.1 100 Continue\r\n\r\n") then return end
      end
      local b = sock:receive(len)
      if not b then return end
      req.body = b
    end
    if probe(req.path) then
      sock:settimeout(100)
      local more = sock:receiveany(65536)
      req.extra = more or ""
      sock:settimeout(M.idle * 1000)
    end
    local route = M.routes[req.path]
    if not route then
      c:reply("404 Not Found", nil, "no route " .. tostring(req.path))
    else
      local ok, what = pcall(route, c, req)
      if not ok then
        ngx.log(ngx.ERR, "h1_raw route ", req.path, ": ", what)
        return
      end
      if what == "close" then return end
    end
  end
end

return M
