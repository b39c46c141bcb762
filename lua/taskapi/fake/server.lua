-- taskapi.fake.server: the fake provider's model hosted by a private nginx (OpenResty's Lua
-- module) on 127.0.0.1.
--
--   local server = require "taskapi.fake.server"
--   local s = assert(server.start{ttl = 600})   -- {url=, dir=, port=, stop=, log=}
--   -- Tripo base URLs: s.url .. "/tripo/v3" (V3), s.url .. "/tripo/v2/openapi" (V2);
--   -- SellerPic: s.url .. "/sellerpic"
--   s.stop()
--
-- One worker process holds the model in this module's state (worker_processes 1). Plain file
-- answers go through nginx's static module (an internal location, Range handled natively);
-- faulted ones (drop, ignore_range, lie_length, stall, filename) stream from Lua.
-- /static/tripo-status (and /static/task/<any id>, so a Tripo V2 client with base_url
-- url .. "/static" reaches it) answers a constant Tripo status body with no model work,
-- /static/tasks/<any id> the same for a V3 client, and
-- /static/files/<name> serves <files_dir>/static/<name> (a folder the caller makes) by nginx
-- alone (benchmarks).
local M = {}

local CHUNK = 65536

-- The answer fields of the model's FAULT_TABLE this host plays (M.handle, serve_stream).
require("taskapi.fake.model").check_host("taskapi.fake.server",
  { delay = true, reset = true, drop_after = true, lie_length = true, stall = true })

local STATIC_TRIPO_STATUS = '{"code":0,"data":{"consumed_credit":20,"create_time":1700000000,"input":{},' ..
  '"output":{"model":"http://127.0.0.1/files/static/model.glb","rendered_image":"http://127.0.0.1/files/static/rendered_image.webp"},' ..
  '"progress":100,"queuing_num":-1,"running_left_time":-1,"status":"success",' ..
  '"task_id":"7f3a9c1e-0000-4000-a000-000000000000","type":"text_to_model"}}'
M.STATIC_TRIPO_STATUS = STATIC_TRIPO_STATUS

-- The same for Tripo V3 (/static/tasks/<any id>: a V3 client with base_url url .. "/static").
local STATIC_TRIPO3_STATUS = '{"code":0,"data":{"completed_at":"2023-11-14T22:13:23Z","created_at":"2023-11-14T22:13:20Z",' ..
  '"credits_consumed":12.5,"input":{},' ..
  '"output":{"model_url":"http://127.0.0.1/files/static/model.glb","rendered_image_url":"http://127.0.0.1/files/static/rendered_image.webp"},' ..
  '"progress":100,"status":"success","task_id":"7f3a9c1e-0000-4000-a000-000000000000","type":"text_to_model"},' ..
  '"status":"success"}'
M.STATIC_TRIPO3_STATUS = STATIC_TRIPO3_STATUS

----------------------------------------------------------------------------------------------
-- inside nginx

local state

--- Called by init_worker_by_lua: makes the worker's model.
function M.init(conf)
  local model = require "taskapi.fake.model"
  local ngx = ngx
  state = {
    files_dir = conf.files_dir,
    model = model.new({
      clock = function() ngx.update_time(); return ngx.now() end,
      files_dir = conf.files_dir,
      keys = conf.keys,
      link_ttl = conf.link_ttl,
      balance = conf.balance,
      sellerpic_total = conf.sellerpic_total,
      v3_statuses = conf.v3_statuses,
      v3_eta = conf.v3_eta,
      list_shape = conf.list_shape,
      credits = conf.credits,
      presign_ttl = conf.presign_ttl,
    }),
  }
end

local function last(v)
  if type(v) == "table" then return v[#v] end
  return v
end

local function read_body(ngx)
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file()
  if path then
    local f = io.open(path, "rb")
    if f then
      body = f:read("*a")
      f:close()
      return body
    end
  end
  return nil
end

local function serve_stream(ngx, resp)
  local f = io.open(resp.file, "rb")
  if not f then
    ngx.status = 500
    ngx.header["Content-Length"] = nil
    ngx.print("fake: cannot open the file\n")
    return
  end
  f:seek("set", resp.offset or 0)
  local total = resp.drop_after or resp.length
  local sent, stalled = 0, false
  ngx.send_headers()
  while sent < total do
    local want = math.min(CHUNK, total - sent)
    if resp.stall and not stalled then
      if sent >= (resp.stall_after or 0) then
        ngx.flush(true)
        ngx.sleep(resp.stall)
        stalled = true
      else
        want = math.min(want, resp.stall_after - sent)
      end
    end
    local chunk = f:read(want)
    if not chunk then break end
    local ok = ngx.print(chunk)
    if not ok then break end
    ngx.flush(true)
    sent = sent + #chunk
  end
  f:close()
  if resp.drop_after or resp.lie_length then
    ngx.flush(true)
    return ngx.exit(ngx.ERROR) -- closes the connection short of the announced length
  end
end

--- The content handler of every location but the static ones.
function M.handle()
  local ngx = ngx
  local m = state.model
  local headers = {}
  for k, v in pairs(ngx.req.get_headers(200)) do headers[k:lower()] = last(v) end
  local query = {}
  for k, v in pairs(ngx.req.get_uri_args(200)) do
    v = last(v)
    if v == true then v = "" end
    query[k] = v
  end
  local host = ngx.var.http_host or ("127.0.0.1:" .. ngx.var.server_port)
  local ok, resp = pcall(m.handle, m, {
    method = ngx.req.get_method(),
    path = ngx.var.uri,
    query = query,
    headers = headers,
    body = read_body(ngx),
    base_url = (ngx.var.scheme or "http") .. "://" .. host,
    connection = tonumber(ngx.var.connection), -- nginx's connection serial number, for the log
  })
  if not ok then
    ngx.log(ngx.ERR, "fake model: ", tostring(resp))
    ngx.status = 500
    ngx.header["Content-Type"] = "text/plain"
    ngx.print("fake model error: " .. tostring(resp) .. "\n")
    return
  end
  if resp.delay then ngx.sleep(resp.delay) end
  if resp.reset then return ngx.exit(444) end -- a scripted fault: close without an answer
  if resp.file and resp.plain then
    -- nginx's static module serves it (Range, HEAD); the header filter sets the type
    local rel = resp.file:sub(#state.files_dir + 2)
    return ngx.exec("/_fake_files_internal/" .. rel, { ct = resp.headers["Content-Type"] })
  end
  ngx.status = resp.status
  for k, v in pairs(resp.headers or {}) do ngx.header[k] = v end
  if resp.file then
    if resp.head then
      ngx.send_headers()
      return
    end
    return serve_stream(ngx, resp)
  end
  local body = resp.body or ""
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

----------------------------------------------------------------------------------------------
-- outside nginx: start and stop

local function lua_literal(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "table" then
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = "[" .. lua_literal(k) .. "]=" .. lua_literal(x)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "nil"
end

local TYPES = [[
      types {
        model/gltf-binary glb;
        image/png png;
        image/jpeg jpg jpeg;
        image/webp webp;
        image/gif gif;
        video/mp4 mp4;
      }
]]

--- Starts the fake: opts ttl (600), workers (1; the model lives in one worker), keys (more
--- API keys besides test-key, tsk_test-key, other-key, tsk_other-key: a list {"k1", ...}, a
--- set {k1 = true} or {key = "owner"}), link_ttl (300), balance, sellerpic_total,
--- v3_statuses, v3_eta, list_shape, credits, presign_ttl (see taskapi.fake.model's new),
--- log_level, port; for HTTPS (the TLS specs) listen_opts (" ssl") and server
--- ("ssl_certificate ...; ssl_certificate_key ...;"), passed to the launcher, and locations
--- (extra server-block config placed before the fake's own). File links use the scheme the
--- request came in with. Returns {url=, dir=, port=, stop=, log=} or nil, err.
function M.start(opts)
  opts = opts or {}
  local nginx = require "taskapi.fake.process"
  local p = io.popen("mktemp -d /tmp/taskapi-fake.XXXXXX")
  local dir = p and p:read("*l")
  if p then p:close() end
  if not dir or dir == "" then return nil, "cannot make a temporary folder" end
  local files = dir .. "/files"
  os.execute("mkdir -p '" .. files .. "'")
  local conf = {
    files_dir = files, keys = opts.keys, link_ttl = opts.link_ttl, balance = opts.balance,
    sellerpic_total = opts.sellerpic_total, v3_statuses = opts.v3_statuses, v3_eta = opts.v3_eta,
    list_shape = opts.list_shape, credits = opts.credits, presign_ttl = opts.presign_ttl,
  }
  local http = "  init_worker_by_lua_block { require('taskapi.fake.server').init(" .. lua_literal(conf) .. ") }\n" ..
    "  lua_socket_log_errors off;\n"
  local locations = table.concat({
    opts.locations or "",
    "    location = /static/tripo-status {",
    "      default_type application/json;",
    "      add_header X-Tripo-Trace-ID fake-static-trace;",
    "      return 200 '" .. STATIC_TRIPO_STATUS .. "';",
    "    }",
    -- the same constant body under a status path of the Tripo client: base_url .. "/static"
    "    location /static/task/ {",
    "      default_type application/json;",
    "      add_header X-Tripo-Trace-ID fake-static-trace;",
    "      return 200 '" .. STATIC_TRIPO_STATUS .. "';",
    "    }",
    "    location /static/tasks/ {",
    "      default_type application/json;",
    "      add_header X-Tripo-Trace-ID fake-static-trace;",
    "      return 200 '" .. STATIC_TRIPO3_STATUS .. "';",
    "    }",
    -- plain files from <files_dir>/static/, served by nginx alone (benchmarks)
    "    location /static/files/ {",
    "      alias " .. files .. "/static/;",
    TYPES,
    "      default_type application/octet-stream;",
    "    }",
    "    location /_fake_files_internal/ {",
    "      internal;",
    "      alias " .. files .. "/;",
    TYPES,
    "      default_type application/octet-stream;",
    "      etag off;",
    "      header_filter_by_lua_block {",
    "        local ct = ngx.var.arg_ct",
    "        if ct and ngx.status < 300 then ngx.header['Content-Type'] = ngx.unescape_uri(ct) end",
    "      }",
    "    }",
    -- presigned PUTs (branch presign): bodies up to 1 GiB (nginx buffers them to a file)
    "    location /storage/ {",
    "      client_max_body_size 1g;",
    "      content_by_lua_block { require('taskapi.fake.server').handle() }",
    "    }",
    "    location / {",
    "      content_by_lua_block { require('taskapi.fake.server').handle() }",
    "    }",
  }, "\n")
  local h, err = nginx.start({
    dir = dir, ttl = opts.ttl or 600, workers = opts.workers or 1, http = http, locations = locations,
    log_level = opts.log_level, port = opts.port, listen_opts = opts.listen_opts, server = opts.server,
  })
  if not h then
    os.execute("rm -rf '" .. dir .. "'")
    return nil, err
  end
  h.stop = function() return nginx.stop(dir, true) end
  h.files_dir = files
  return h
end

--- Stops the fake whose prefix folder is dir.
function M.stop(dir)
  return require("taskapi.fake.process").stop(dir, true)
end

return M
