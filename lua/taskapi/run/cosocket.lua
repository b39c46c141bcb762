-- taskapi.run.cosocket: API calls inside OpenResty over nginx's own sockets (ngx.socket.tcp), on the
-- worker's event loop: no timer, no polling; a call yields only while its socket waits.
--
-- HTTP/1.1 with keep-alive: one pool of idle connections per scheme, host, port and TLS setting
-- (setkeepalive), a connection going back to it only when its response was read to its end.
-- TLS through sslhandshake, verified against nginx's `lua_ssl_trusted_certificate` (server
-- name = the URL's host) unless the client says `insecure = true`. A request with
-- `fresh_connect` (a create: it may be billed) goes over a new connection, closed after it.
--
-- M.request(req) takes the C module's request table for API calls (url, method, headers,
-- body, user_agent, timeout, connect_timeout, low_speed_time, max_redirects, max_body,
-- json, insecure, ca_file, fresh_connect, response_headers) and returns the same res (status,
-- headers when asked, content_type, retry_after, trace_id, effective_url, redirects, time,
-- json or json_error decoded by taskapi.core with exact integers, body when it is not JSON)
-- or nil, err in the library's shape (kind, message, retryable, sent, status).
-- Downloads (req.path) and multipart uploads (req.mime) are not for this module.
local core = require "taskapi.core"
local errors = require "taskapi.errors"

local M = {
  pool_size = 128,           -- idle connections kept per pool
  keepalive_timeout = 60,    -- seconds an idle connection is kept
  max_header_bytes = 65536,  -- status line and header fields of one response
  max_headers = 100,         -- header fields of one response
}

local ngx = ngx
local tcp = ngx.socket.tcp
local now = ngx.now
local find, sub, lower, match, byte = string.find, string.sub, string.lower, string.match, string.byte
local concat = table.concat
local tonumber, tostring, type = tonumber, tostring, type
local json_decode = core.json_decode
local parse_content_type, parse_retry_after = core.parse_content_type, core.parse_retry_after
local DEFAULT_UA = "taskapi/" .. core.version .. " (OpenResty)"
local BAD = "[\r\n%z]"
local ok_table, new_table = pcall(require, "table.new")
if not ok_table then new_table = function() return {} end end

local function fail(kind, msg, retryable, sent, status)
  local e = setmetatable({ kind = kind, message = msg, retryable = retryable or false, sent = sent, status = status },
    errors.Error)
  return nil, e
end

local function invalid(msg)
  return nil, errors.new("invalid_argument", msg)
end

----------------------------------------------------------------------------------------------
-- URLs

-- An origin ("scheme://authority") parsed once: scheme, host (an IPv6 address in brackets:
-- nginx connects to "[v6]"), port, the Host header's value, "host:port" for messages, and the
-- connect options of its pools (made on first use).
local origins, n_origins = {}, 0

local function origin_of(origin)
  local rec = origins[origin]
  if rec then return rec end
  local scheme, authority = match(origin, "^(%a[%w+.-]*)://(.*)$")
  scheme = lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then return nil end
  local host, port
  if byte(authority, 1) == 91 then -- "[v6]:port"
    host, port = match(authority, "^(%[[%x:.]+%]):?(%d*)$")
  else
    host, port = match(authority, "^([^:@%[%]]+):?(%d*)$")
  end
  if not host then return nil end
  local default = scheme == "https" and 443 or 80
  port = port == "" and default or tonumber(port)
  if port < 1 or port > 65535 then return nil end
  host = lower(host)
  local hosthdr = port ~= default and host .. ":" .. port or host
  rec = { scheme = scheme, host = host, port = port, hosthdr = hosthdr, hp = host .. ":" .. port,
    origin = scheme .. "://" .. hosthdr, https = scheme == "https", opts = {}, heads = {} }
  if n_origins >= 256 then origins, n_origins = {}, 0 end -- redirects to many hosts: start over
  origins[origin], n_origins = rec, n_origins + 1
  return rec
end

-- url -> origin record, path (with the query; "/" when empty); nil when it is not an http(s)
-- URL, false when it holds CR, LF or NUL.
local function parse_url(url)
  local origin, path = match(url, "^(%a[%w+.-]*://[^/?#\r\n%z]*)([^\r\n%z]*)$")
  if not origin then return not find(url, BAD) and nil end
  local rec = origin_of(origin)
  if not rec then return nil end
  if path == "" then return rec, "/" end
  local hash = find(path, "#", 1, true)
  if hash then path = sub(path, 1, hash - 1) end
  if path == "" then path = "/" elseif byte(path, 1) == 63 then path = "/" .. path end
  return rec, path
end
M.parse_url = parse_url

-- The URL a Location header points to, from the URL it came from.
local function resolve(base, loc)
  if match(loc, "^%a[%w+.-]*://") then return loc end
  local scheme, rest = match(base, "^(%a[%w+.-]*)://(.*)$")
  if sub(loc, 1, 2) == "//" then return scheme .. ":" .. loc end
  local authority, path = match(rest, "^([^/?#]*)([^?#]*)")
  if byte(loc, 1) == 47 then return scheme .. "://" .. authority .. loc end
  if byte(loc, 1) == 63 then return scheme .. "://" .. authority .. (path ~= "" and path or "/") .. loc end
  local dir = match(path, "^(.*/)") or "/"
  return scheme .. "://" .. authority .. dir .. loc
end
M.resolve = resolve

----------------------------------------------------------------------------------------------
-- the request's bytes

local METHODS = { GET = true, POST = true, HEAD = true, PUT = true, DELETE = true, PATCH = true }

-- headers array -> "Name: value\r\n..." (cached per array, as long as its length stays: the
-- client's prebuilt header tables, which nothing changes)
local joined = setmetatable({}, { __mode = "k" }) -- array -> {block, length}
local function header_block(headers)
  if headers == nil then return "" end
  local j = joined[headers]
  if j and j[2] == #headers then return j[1] end
  if type(headers) ~= "table" then return nil, "req.headers must be an array of strings" end
  local parts = {}
  for i = 1, #headers do
    local h = headers[i]
    if type(h) ~= "string" then return nil, "req.headers must be an array of strings" end
    if find(h, BAD) or not find(h, ":", 2, true) then
      return nil, "req.headers entries must be \"Name: value\" without CR or LF"
    end
    parts[i] = h
  end
  local s = #parts > 0 and concat(parts, "\r\n") .. "\r\n" or ""
  joined[headers] = { s, #headers }
  return s
end

-- Without the Authorization header (a redirect to another origin: the key stays home).
local function without_auth(block)
  local out = {}
  for line in block:gmatch("([^\r\n]+)\r\n") do
    if not match(lower(line), "^authorization%s*:") then out[#out + 1] = line .. "\r\n" end
  end
  return concat(out)
end

----------------------------------------------------------------------------------------------
-- connections

-- The connect options of a pool: one per origin and TLS setting; a fresh connection's pool
-- never holds an idle one, so connect always opens a new connection there.
local function pool_of(rec, verify, fresh)
  local k = (verify and 1 or 2) + (fresh and 2 or 0)
  local o = rec.opts[k]
  if not o then
    local name = rec.scheme .. "://" .. rec.host .. ":" .. rec.port .. (rec.https and not verify and "#insecure" or "") ..
      (fresh and "#fresh" or "")
    o = fresh and { pool = name } or { pool = name, pool_size = M.pool_size }
    rec.opts[k] = o
  end
  return o
end

local TLS_HINT = " -- inside nginx, TLS is verified against the CAs of the `lua_ssl_trusted_certificate` directive " ..
  "(for example `lua_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;` in the http block): " ..
  "set it, or use insecure = true for a test server"

-- OpenSSL's verify results that mean "no trusted CA for this chain"
local UNTRUSTED = { ["2"] = true, ["18"] = true, ["19"] = true, ["20"] = true, ["21"] = true }

local function tls_error(hp, host, err)
  err = tostring(err)
  local msg = "TLS error with " .. hp .. ": " .. err
  local code = match(err, "^(%d+):")
  if UNTRUSTED[code] or find(err, "issuer", 1, true) or find(err, "self[- ]signed") then
    msg = msg .. TLS_HINT
  elseif find(err, "host mismatch", 1, true) then
    msg = msg .. " (the certificate is not for " .. host .. ")"
  end
  return fail("transport", msg, false, false)
end

local function connect_error(hp, host, err)
  if err == "timeout" then return fail("timeout", "connect timed out (" .. hp .. ")", true, false) end
  if find(err, "no resolver defined", 1, true) then
    return fail("transport", "cannot resolve " .. host .. " (" .. hp .. "): " .. err ..
      " -- inside nginx, host names are resolved by the `resolver` directive: set it in the http block", false, false)
  end
  return fail("transport", "cannot connect to " .. hp .. ": " .. tostring(err), true, false)
end

----------------------------------------------------------------------------------------------
-- the response

local NO_BODY_STATUS = { [204] = true, [304] = true }

-- The value in head of the field line whose name ends at b (the ":"), without the blanks
-- around it.
local function value_at(head, b)
  local e = find(head, "\r", b + 1, true)
  local i, j = b + 1, e - 1
  local c = byte(head, i)
  while c == 32 or c == 9 do
    i = i + 1
    c = byte(head, i)
  end
  c = byte(head, j)
  while j >= i and (c == 32 or c == 9) do
    j = j - 1
    c = byte(head, j)
  end
  return sub(head, i, j)
end

local function digits(v)
  if v == "" or #v > 15 then return false end
  for i = 1, #v do
    local c = byte(v, i)
    if c < 48 or c > 57 then return false end
  end
  return true
end

-- The value of the last field `key` ("\r\nname:", lower case) of a head, found in low (the
-- head in lower case, same positions) and read from head; nil when absent. number: the value
-- must be digits, the same in every occurrence (else false).
local function field(head, low, key, number)
  local _, b = find(low, key, 1, true)
  if not b then return nil end
  local value = value_at(head, b)
  while true do
    local _, b2 = find(low, key, b + 1, true)
    if not b2 then break end
    local v2 = value_at(head, b2)
    if number and v2 ~= value then return false end
    b, value = b2, v2
  end
  if number and not digits(value) then return false end
  return value
end

-- Sets the read timeout to what is left before the deadline when that is shorter than the
-- stall limit. Returns false when the deadline has passed.
local function before_read(sock, deadline, stall)
  local left = deadline - now()
  if left <= 0 then return false end
  if left < stall then sock:settimeout(left * 1000 + 1) end
  return true
end

local function seconds_text(s)
  if s == math.floor(s) then return string.format("%d", s) end
  return string.format("%g", s)
end

local function read_error(hp, err, got, x)
  if err == "timeout" then
    if now() >= x.deadline - 0.002 then
      return fail("timeout", "timed out after " .. seconds_text(x.timeout) .. " s (" .. hp .. ")", true, true)
    end
    return fail("timeout", "stalled: no data for " .. seconds_text(x.stall) .. " s (" .. hp .. ")", true, true)
  end
  if got then
    return fail("transport", "connection closed in the middle of the response (" .. hp .. "): " .. tostring(err), true, true)
  end
  return fail("transport", "no response from " .. hp .. ": " .. tostring(err), true, true)
end

-- Reads one response from sock. Returns res, reusable, location; or nil, err, stale where
-- stale says nothing at all was received (a kept-alive connection the server had closed).
local function read_response(sock, x, hp, method)
  local buf, got = "", false
  local hend -- where the head ends in buf
  local stall, deadline = x.stall, x.deadline
  local status, minor
  -- the head (skipping 1xx interim responses)
  while true do
    while true do
      hend = find(buf, "\r\n\r\n", 1, true)
      if hend then break end
      if #buf > M.max_header_bytes then
        return fail("bad_response", "response headers larger than " .. M.max_header_bytes .. " bytes (" .. hp .. ")",
          false, true)
      end
      if not before_read(sock, deadline, stall) then return read_error(hp, "timeout", got, x) end
      local data, err = sock:receiveany(65536)
      if not data then
        local e1, e2 = read_error(hp, err, got, x)
        return e1, e2, not got and err ~= "timeout"
      end
      got = true
      buf = buf == "" and data or buf .. data
    end
    if hend > M.max_header_bytes then
      return fail("bad_response", "response headers larger than " .. M.max_header_bytes .. " bytes (" .. hp .. ")",
        false, true)
    end
    -- "HTTP/1.x NNN"
    local h, t1, t2, p, sl, one, dot, mi, sp, d1, d2, d3 = byte(buf, 1, 12)
    if not (h == 72 and t1 == 84 and t2 == 84 and p == 80 and sl == 47 and one == 49 and dot == 46 and
        (mi == 48 or mi == 49) and sp == 32 and d1 and d1 >= 49 and d1 <= 53 and d2 >= 48 and d2 <= 57 and
        d3 >= 48 and d3 <= 57) then
      return fail("transport", "malformed response from " .. hp .. " (not an HTTP/1.x status line)", true, true)
    end
    minor, status = mi == 49 and "1" or "0", (d1 - 48) * 100 + (d2 - 48) * 10 + d3 - 48
    if status >= 200 or status == 101 then break end
    buf = sub(buf, hend + 4)
  end

  -- the header fields
  local want = x.want_headers
  local headers, clen, te, conn, ctype, rafter, trace, location
  local pos = find(buf, "\r\n", 1, true) + 2
  if want then
    -- every field into res.headers (lower-case names, the last value wins)
    headers = {}
    local count = 0
    while pos < hend + 2 do
      local e = find(buf, "\r\n", pos, true)
      local name, value = match(buf, "^([^:\r\n]+):[ \t]*([^\r\n]*)", pos)
      if name then
        count = count + 1
        if count > M.max_headers then
          return fail("bad_response", "more than " .. M.max_headers .. " header fields in the response (" .. hp .. ")",
            false, true, status)
        end
        local last = byte(value, -1)
        if last == 32 or last == 9 then value = match(value, "^(.-)[ \t]*$") end
        name = lower(name)
        last = byte(name, -1)
        if last == 32 or last == 9 then name = match(name, "^(.-)[ \t]*$") end
        if name == "content-length" then
          if not digits(value) or (clen and clen ~= tonumber(value)) then
            return fail("transport", "malformed Content-Length in the response (" .. hp .. ")", true, true, status)
          end
          clen = tonumber(value)
        end
        headers[name] = value
      end
      pos = e + 2
    end
    te, conn, ctype = headers["transfer-encoding"], headers.connection, headers["content-type"]
    rafter, location = headers["retry-after"], headers.location
    if x.trace_header then trace = headers[x.trace_header] end
    if te then te = lower(te) end
    if conn then conn = lower(conn) end
  else
    -- only the fields read here: found in a lower-case copy of the head (same positions)
    local count, p = 0, pos
    while true do
      p = find(buf, "\n", p, true)
      if not p or p > hend then break end
      count, p = count + 1, p + 1
    end
    if count > M.max_headers + 1 then
      return fail("bad_response", "more than " .. M.max_headers .. " header fields in the response (" .. hp .. ")",
        false, true, status)
    end
    local low = lower(sub(buf, 1, hend + 1))
    clen = field(buf, low, "\r\ncontent-length:", true)
    if clen then
      if clen == false then
        return fail("transport", "malformed Content-Length in the response (" .. hp .. ")", true, true, status)
      end
      clen = tonumber(clen)
    end
    te = field(buf, low, "\r\ntransfer-encoding:")
    conn = field(buf, low, "\r\nconnection:")
    if te then te = lower(te) end
    if conn then conn = lower(conn) end
    ctype = field(buf, low, "\r\ncontent-type:")
    rafter = field(buf, low, "\r\nretry-after:")
    if x.trace_header then trace = field(buf, low, "\r\n" .. x.trace_header .. ":") end
    location = field(buf, low, "\r\nlocation:")
  end

  local res = new_table(0, 8)
  res.status = status
  if want then res.headers = headers end
  if ctype then res.content_type = parse_content_type(ctype) end
  if rafter then res.retry_after = parse_retry_after(rafter) end
  if trace then res.trace_id = trace end
  local reusable = minor == "1" and not (conn and find(conn, "close", 1, true))

  -- the body
  local max_body = x.max_body
  local body
  local start = hend + 4
  if method == "HEAD" or NO_BODY_STATUS[status] or status == 101 then
    body = ""
    if #buf >= start then reusable = false end
  elseif te and match(te, "chunked%s*$") then
    if clen then reusable = false end -- both: the length is ignored, and the connection closed after
    local parts, n, total, p = {}, 0, 0, start
    while true do
      local e = find(buf, "\r\n", p, true)
      while not e do
        if #buf - p > 4096 then return fail("transport", "malformed chunked response (" .. hp .. ")", true, true, status) end
        if not before_read(sock, deadline, stall) then return read_error(hp, "timeout", true, x) end
        local data, err = sock:receiveany(65536)
        if not data then return read_error(hp, err, true, x) end
        buf, p = sub(buf, p) .. data, 1
        e = find(buf, "\r\n", p, true)
      end
      local hex = match(buf, "^(%x+)[ \t]*[;\r]", p)
      if not hex or #hex > 12 then return fail("transport", "malformed chunked response (" .. hp .. ")", true, true, status) end
      local size = tonumber(hex, 16)
      p = e + 2
      if size == 0 then
        -- trailer fields, up to the empty line
        local lines = 0
        while true do
          e = find(buf, "\r\n", p, true)
          if e then
            if e == p then
              p = e + 2
              break
            end
            lines = lines + 1
            if lines > M.max_headers then
              return fail("bad_response", "too many trailer fields in the response (" .. hp .. ")", false, true, status)
            end
            p = e + 2
          else
            if #buf - p > M.max_header_bytes then
              return fail("bad_response", "response trailers too large (" .. hp .. ")", false, true, status)
            end
            if not before_read(sock, deadline, stall) then return read_error(hp, "timeout", true, x) end
            local data, err = sock:receiveany(65536)
            if not data then return read_error(hp, err, true, x) end
            buf, p = sub(buf, p) .. data, 1
          end
        end
        break
      end
      total = total + size
      if total > max_body then
        sock:close()
        return fail("bad_response", "response body larger than " .. max_body .. " bytes (" .. hp .. ")", false, true, status)
      end
      local avail = #buf - p + 1
      local chunk
      if avail >= size + 2 then
        if sub(buf, p + size, p + size + 1) ~= "\r\n" then
          return fail("transport", "malformed chunked response (" .. hp .. ")", true, true, status)
        end
        chunk = sub(buf, p, p + size - 1)
        p = p + size + 2
      else
        if not before_read(sock, deadline, stall) then return read_error(hp, "timeout", true, x) end
        local rest, err = sock:receive(size + 2 - avail)
        if not rest then return read_error(hp, err, true, x) end
        local whole = sub(buf, p) .. rest
        if sub(whole, -2) ~= "\r\n" then
          return fail("transport", "malformed chunked response (" .. hp .. ")", true, true, status)
        end
        chunk = sub(whole, 1, size)
        buf, p = "", 1
      end
      n = n + 1
      parts[n] = chunk
    end
    if p <= #buf then reusable = false end
    body = n == 1 and parts[1] or concat(parts)
  elseif clen then
    if clen > max_body then
      return fail("bad_response", "response body larger than " .. max_body .. " bytes (" .. hp .. ")", false, true, status)
    end
    local have = #buf - start + 1
    if have >= clen then
      body = (start == 1 and have == clen) and buf or sub(buf, start, start + clen - 1)
      if have > clen then reusable = false end
    else
      if not before_read(sock, deadline, stall) then return read_error(hp, "timeout", true, x) end
      local rest, err = sock:receive(clen - have)
      if not rest then return read_error(hp, err, true, x) end
      body = have > 0 and sub(buf, start) .. rest or rest
    end
  else
    -- no length: the body ends when the server closes
    reusable = false
    local parts, total = { sub(buf, start) }, #buf - start + 1
    while true do
      if total > max_body then
        return fail("bad_response", "response body larger than " .. max_body .. " bytes (" .. hp .. ")", false, true, status)
      end
      if not before_read(sock, deadline, stall) then return read_error(hp, "timeout", true, x) end
      local data, err = sock:receiveany(65536)
      if not data then
        if err == "closed" then break end
        return read_error(hp, err, true, x)
      end
      parts[#parts + 1] = data
      total = total + #data
    end
    body = concat(parts)
  end
  res.body = body
  return res, reusable, location
end

----------------------------------------------------------------------------------------------
-- one exchange, then redirects

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- The start of a request after "METHOD path": protocol, Host, User-Agent, the given headers
-- (cached per origin, user agent and header block).
local function head_of(rec, ua, hblock)
  local per = rec.heads[ua]
  if not per then
    per = {}
    rec.heads[ua] = per
  end
  local h = per[hblock]
  if not h then
    h = " HTTP/1.1\r\nHost: " .. rec.hosthdr .. "\r\nUser-Agent: " .. ua .. "\r\n" .. hblock
    per[hblock] = h
  end
  return h
end

-- One request on one connection. Returns res, location or nil, err.
local function exchange(x, rec, path, method, hblock, body)
  local fresh, hp = x.fresh, rec.hp
  for attempt = 1, 2 do
    local sock = tcp()
    sock:settimeouts(x.connect_ms, x.stall_ms, x.stall_ms)
    local ok, err = sock:connect(rec.host, rec.port, pool_of(rec, x.verify, fresh or attempt > 1))
    if not ok then return connect_error(hp, rec.host, err) end
    local reused = sock:getreusedtimes() > 0
    if rec.https and not reused then
      local sok, serr = sock:sslhandshake(false, rec.host, x.verify)
      if not sok then
        sock:close()
        if serr == "timeout" then return fail("timeout", "TLS handshake timed out (" .. hp .. ")", true, false) end
        return tls_error(hp, rec.host, serr)
      end
      -- lua-nginx-module 0.10.23 (Debian 12): when the handshake finishes asynchronously and
      -- verification fails, sslhandshake returns true and has closed the connection; the
      -- socket then says "closed", and nothing may be sent.
      if not sock:getreusedtimes() then
        sock:close()
        return fail("transport", "TLS error with " .. hp .. ": the certificate did not verify (nginx closed the " ..
          "connection after the handshake; its error log says why: a CA not in lua_ssl_trusted_certificate, " ..
          "a certificate not for " .. rec.host .. ", or an expired one)" .. TLS_HINT, false, false)
      end
    end
    local head = head_of(rec, x.user_agent, hblock)
    local data
    if body then
      data = { method, " ", path, head, "Content-Length: ", #body, fresh and "\r\nConnection: close\r\n\r\n" or "\r\n\r\n", body }
    elseif fresh or method == "POST" or method == "PUT" or method == "PATCH" then
      data = method .. " " .. path .. head .. (method == "GET" and "" or "Content-Length: 0\r\n") ..
        (fresh and "Connection: close\r\n\r\n" or "\r\n")
    else
      data = method .. " " .. path .. head .. "\r\n"
    end
    local sent, serr = sock:send(data)
    if not sent then
      sock:close()
      if reused and attempt == 1 then goto again end
      if serr == "timeout" then return fail("timeout", "timed out sending the request (" .. hp .. ")", true, true) end
      return fail("transport", "cannot send the request to " .. hp .. ": " .. tostring(serr), true, true)
    end
    do
      local res, reusable, location = read_response(sock, x, hp, method)
      if not res then
        sock:close()
        -- (res, reusable, location) are (nil, err, stale) here. A kept-alive connection the
        -- server closed before this request: once more on a new one.
        if location and reused and attempt == 1 and not fresh then goto again end
        return nil, reusable
      end
      -- only a connection of the shared pool goes back to it: the second attempt's came from
      -- the pool of fresh connections, which must never hold an idle one (a create's next
      -- connection comes from there)
      if reusable and not fresh and attempt == 1 then
        sock:setkeepalive(M.keepalive_timeout * 1000, M.pool_size)
      else
        sock:close()
      end
      return res, location
    end
    ::again::
  end
  return fail("transport", "no response from " .. hp, true, true)
end

local function number(v, default)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < 0 or v > 1e12 then return nil end
  return v
end

local NUMERIC = { "timeout", "low_speed_time", "connect_timeout", "max_redirects", "max_body" }

local good_ua, n_ua = {}, 0 -- user agents checked already
local trace_lower, n_trace = {}, 0 -- trace header names checked already -> lower case

local CA_FILE = "ca_file cannot be applied to a request inside nginx (cosockets verify against the " ..
  "`lua_ssl_trusted_certificate` directive): add the CA to the file it names and leave ca_file out"

--- Performs one API call (see the top of this file). Returns res or nil, err.
function M.request(req)
  local url = req.url
  if type(url) ~= "string" then return invalid("req.url must be a string") end
  local rec, path = parse_url(url)
  if not rec then
    return invalid(rec == false and "req.url contains control characters" or "req.url must be an http or https URL")
  end
  local method = req.method or "GET"
  if not METHODS[method] then return invalid("req.method must be GET, POST, HEAD, PUT, DELETE or PATCH") end
  local body = req.body
  if body ~= nil and type(body) ~= "string" then return invalid("req.body must be a string") end
  if body and (method == "GET" or method == "HEAD") then return invalid("req.body is not allowed with " .. method) end
  local ua = req.user_agent or DEFAULT_UA
  if not good_ua[ua] then
    if type(ua) ~= "string" or find(ua, BAD) then return invalid("req.user_agent must be a string without control characters") end
    if n_ua >= 64 then good_ua, n_ua = {}, 0 end
    good_ua[ua], n_ua = true, n_ua + 1
  end
  local hblock, herr = header_block(req.headers)
  if not hblock then return invalid(herr) end
  local insecure = req.insecure
  if insecure ~= nil and type(insecure) ~= "boolean" then return invalid("req.insecure must be a boolean") end
  local trace_header = req.trace_header
  if trace_header ~= nil then
    local low = trace_lower[trace_header] -- checked once per name (it is the provider's, on every call)
    if not low then
      if type(trace_header) ~= "string" or #trace_header == 0 or #trace_header > 64 or find(trace_header, "[%s:]") then
        return invalid("req.trace_header must be a header name (1 to 64 characters, no space or colon)")
      end
      low = lower(trace_header)
      if n_trace >= 64 then trace_lower, n_trace = {}, 0 end
      trace_lower[trace_header], n_trace = low, n_trace + 1
    end
    trace_header = low
  end
  local ca_file = req.ca_file
  if ca_file ~= nil and type(ca_file) ~= "string" then return invalid("req.ca_file must be a string") end
  local timeout, stall = number(req.timeout, 30), number(req.low_speed_time, 30)
  local ctimeout, max_redirects = number(req.connect_timeout, 10), number(req.max_redirects, 5)
  local max_body = number(req.max_body, 8388608)
  if not (timeout and stall and ctimeout and max_redirects and max_body) then
    for _, k in ipairs(NUMERIC) do
      if number(req[k], 0) == nil then return invalid("req." .. k .. " must be a number from 0 to 1e12") end
    end
  end
  if timeout == 0 then timeout = 86400 end
  if stall == 0 or stall > timeout then stall = timeout end
  if ctimeout == 0 or ctimeout > timeout then ctimeout = timeout end
  local t0 = now()
  local x = {
    deadline = t0 + timeout, timeout = timeout, stall = stall, stall_ms = stall * 1000, connect_ms = ctimeout * 1000,
    max_body = max_body, verify = insecure ~= true, fresh = req.fresh_connect and true or false, user_agent = ua,
    want_headers = req.response_headers ~= false, trace_header = trace_header,
  }
  local redirects = 0
  while true do
    if ca_file and rec.https then return invalid(CA_FILE) end
    local res, location = exchange(x, rec, path, method, hblock, body)
    if not res then return nil, location end
    local status = res.status
    if not (location and REDIRECT[status]) then
      res.effective_url = url
      res.redirects = redirects
      res.time = now() - t0
      if req.json then
        local b = res.body
        if b == "" then
          res.json_error = "empty body"
        else
          local v, jerr = json_decode(b, max_body)
          if v ~= nil then
            res.json, res.body = v, nil
          else
            res.json_error = type(jerr) == "table" and jerr.message or tostring(jerr)
          end
        end
      end
      return res
    end
    local hp = rec.hp
    if redirects >= max_redirects then
      return fail("transport", "too many redirects from " .. hp .. " (max " .. max_redirects .. ")", false, true)
    end
    local target = resolve(url, location)
    local rec2, path2 = parse_url(target)
    if rec2 == false then return fail("transport", "redirect refused from " .. hp .. ": bad Location", false, true) end
    if not rec2 then
      return fail("transport", "redirect refused from " .. hp .. ": not an http or https URL: " ..
        sub(target, 1, 200), false, true)
    end
    if rec.https and not rec2.https then
      return fail("transport", "redirect refused from " .. hp .. ": an https request is not redirected to \"" ..
        rec2.scheme .. "\" (only https -> https is followed)", false, true)
    end
    redirects = redirects + 1
    if status == 303 and method ~= "HEAD" or (status == 301 or status == 302) and method == "POST" then
      method, body = "GET", nil
    end
    if rec2.origin ~= rec.origin then hblock = without_auth(hblock) end
    url, rec, path = target, rec2, path2
  end
end

return M
