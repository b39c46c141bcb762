-- taskapi.ops.upload: the checks of client:upload before any request, the multipart parts they
-- turn into, and the presigned path for files over the multipart limit. The file itself is
-- never read into Lua: only its first bytes (to know its type) and its size; the C module
-- streams it (req.mime, or req.body_file for the presigned PUT). What differs per provider is
-- data in the provider definition: upload_path, upload_field, upload_max_bytes (the multipart
-- limit), upload_result, upload_types, and presign_path (a file over upload_max_bytes goes
-- there instead: POST {"format"} answers {upload_url, <upload_result>}, then a PUT of the raw
-- bytes to upload_url, a storage host, without the API key).
local errors = require "taskapi.errors"
local http = require "taskapi.api.http"

local M = {}

-- The file types an upload may be, by extension, with their content types. A definition's
-- upload_types lists the ones its provider takes (jpg, png and webp when it says nothing).
local CONTENT_TYPES = {
  jpg = "image/jpeg", jpeg = "image/jpeg", png = "image/png", webp = "image/webp",
  bmp = "image/bmp", tiff = "image/tiff", tif = "image/tiff",
  glb = "model/gltf-binary", obj = "model/obj", fbx = "application/octet-stream", stl = "model/stl",
  ["3mf"] = "model/3mf", usdz = "model/vnd.usdz+zip",
}
M.CONTENT_TYPES = CONTENT_TYPES
local ALIAS = { jpeg = "jpg", tif = "tiff" }
local DEFAULT_TYPES = { "jpg", "png", "webp" }

--- The type of a file's first bytes: "png", "jpg", "webp", "bmp", "tiff", "glb", "fbx", or
--- nil (obj, stl, 3mf and usdz are known by their names only).
function M.sniff(head)
  if type(head) ~= "string" then return nil end
  if head:sub(1, 8) == "\137PNG\r\n\26\n" then return "png" end
  if head:sub(1, 3) == "\255\216\255" then return "jpg" end
  if head:sub(1, 4) == "RIFF" and head:sub(9, 12) == "WEBP" then return "webp" end
  if head:sub(1, 2) == "BM" then return "bmp" end
  if head:sub(1, 4) == "II*\0" or head:sub(1, 4) == "MM\0*" then return "tiff" end
  if head:sub(1, 4) == "glTF" then return "glb" end
  if head:sub(1, 18) == "Kaydara FBX Binary" then return "fbx" end
  return nil
end

local function mb(n)
  local s = string.format("%.1f", n / (1024 * 1024)):gsub("%.0$", "")
  return s .. " MB"
end

--- Checks what client:upload was given: a path, or {path=, type=?, filename=?}. Returns the
--- parts of req.mime, the file's size and what the presigned path needs ({path=, size=,
--- format=, type=}), or nil, err (invalid_argument naming the problem). A file over
--- upload_max_bytes is refused unless the definition has a presign_path.
function M.parts(def, arg)
  if not def.upload_path then return errors.invalid(def.name .. ": this provider has no upload") end
  local o = arg
  if type(arg) == "string" then o = { path = arg }
  elseif type(arg) ~= "table" then
    return errors.invalid("upload expects a file path or {path=, type=?, filename=?}, got " .. type(arg))
  end
  for k in pairs(o) do
    if k ~= "path" and k ~= "type" and k ~= "filename" then
      return errors.invalid("upload: unknown option '" .. tostring(k) .. "'")
    end
  end
  local path = o.path
  if type(path) ~= "string" or path == "" then return errors.invalid("upload: 'path' (a file path) is required") end
  if path:find("%z") then return errors.invalid("upload: the path holds a NUL byte") end
  local shown = "'" .. path:sub(-120) .. "'"
  local f, oerr = io.open(path, "rb")
  if not f then
    local why = tostring(oerr):match(": ([^:]+)$") or tostring(oerr)
    return errors.invalid("upload: cannot open " .. shown .. ": " .. why)
  end
  local head, rerr = f:read(16)
  local size = head and f:seek("end") or 0
  f:close()
  if head == nil and rerr then
    if tostring(rerr):find("Is a directory", 1, true) then
      return errors.invalid("upload: " .. shown .. " is a directory, not a file")
    end
    return errors.invalid("upload: cannot read " .. shown .. ": " .. tostring(rerr))
  end
  if size == 0 then return errors.invalid("upload: " .. shown .. " is empty") end
  local limit = def.upload_max_bytes
  if limit and size > limit and not def.presign_path then
    return errors.invalid("upload: " .. shown .. " is " .. mb(size) .. " (" .. size .. " bytes); " .. def.name ..
      " takes at most " .. mb(limit))
  end
  local ext = path:match("%.([%w]+)$")
  ext = ext and ext:lower()
  local allowed = {}
  for _, k in ipairs(def.upload_types or DEFAULT_TYPES) do allowed[k] = true end
  local sniffed = M.sniff(head)
  local by_name = ext and (ALIAS[ext] or ext)
  local kind = (sniffed and allowed[sniffed] and sniffed) or (by_name and allowed[by_name] and CONTENT_TYPES[by_name] and by_name)
  if not kind then
    local names = table.concat(def.upload_types or DEFAULT_TYPES, ", ")
    return errors.invalid("upload: " .. shown .. " is not a file " .. def.name .. " takes (" .. names ..
      ", by its name or its first bytes)")
  end
  local ctype = o.type
  if ctype ~= nil then
    if type(ctype) ~= "string" or not ctype:match("^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+$") then
      return errors.invalid("upload: 'type' must be a content type such as image/png")
    end
  else
    ctype = CONTENT_TYPES[kind]
  end
  local filename = o.filename
  if filename ~= nil then
    if type(filename) ~= "string" or filename == "" or filename:find('[/"%c]') then
      return errors.invalid("upload: 'filename' must be a base name without '/', quotes or control characters")
    end
  else
    filename = path:match("([^/]+)$")
    if filename:find('["%c]') then filename = "upload." .. kind
    elseif not (ext and CONTENT_TYPES[ext]) then filename = filename .. "." .. kind end
  end
  return { { name = def.upload_field or "file", path = path, type = ctype, filename = filename } }, size,
    { path = path, size = size, format = kind, type = ctype }
end

--- True when the file of M.parts goes the presigned way (over the multipart limit).
function M.is_presigned(def, size)
  local limit = def.upload_max_bytes
  return def.presign_path ~= nil and limit ~= nil and size > limit
end

-- The presigned path ------------------------------------------------------------------------

local function plain(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- Removes the signed URL's query string (and the URL itself) from an error's text fields.
local function hide_url(e, url)
  local q = url:match("%?(.*)$")
  for k, v in pairs(e) do
    if type(v) == "string" then
      v = v:gsub(plain(url), ((url:gsub("%?.*$", "?...")):gsub("%%", "%%%%")))
      if q and #q >= 4 then v = v:gsub(plain(q), "...") end
      e[k] = v
    end
  end
  return e
end

-- An error of one step: message "<provider>: upload, <step>: <what>", err.step set.
local function step_error(def, step, err)
  err = errors.adopt(err)
  local msg = tostring(err.message or "")
  local prefix = def.name .. ": "
  if msg:sub(1, #prefix) == prefix then msg = msg:sub(#prefix + 1) end
  err.message = def.name .. ": upload, " .. step .. ": " .. msg
  err.step = step
  return err
end

local function host_of(url)
  return url:match("^%a+://([^/?#]+)") or "?"
end

-- How a storage host's answer to the PUT reads: nil on 2xx, else an error (403 expired).
local function put_answer(def, res, host)
  local st = res.status
  if st >= 200 and st <= 299 then return nil end
  local kind, retryable = "bad_response", false
  if st == 403 then kind = "auth"
  elseif st == 404 then kind = "not_found"
  elseif st == 408 then kind, retryable = "timeout", true
  elseif st == 429 then kind, retryable = "rate_limited", true
  elseif st >= 500 then kind, retryable = "server", true
  elseif st >= 400 then kind = "invalid_argument" end
  local snippet = type(res.body) == "string" and res.body:sub(1, 120):gsub("%s+", " ") or ""
  local what = st == 403 and "the storage host refused the presigned URL (expired?)" or "the storage host answered"
  return errors.new(kind, def.name .. ": " .. what .. " (" .. host .. ")" ..
    (snippet ~= "" and ": " .. snippet or ""), { status = st, retryable = retryable, retry_after = res.retry_after })
end

-- PUTs the file to upload_url through taskapi.run.backend with the client's TLS settings and stall
-- limit (no total limit, like a download), no API headers, retried like an API call.
-- Returns true, or nil, err (err.expired when the storage host answered 403).
local function put_file(client, url, info)
  local def = client.def
  local host = host_of(url)
  local req = http.request(client, {
    method = "PUT", url = url, body_file = info.path, body_type = info.type, timeout = 0,
    max_body = 64 * 1024, response_headers = false,
  })
  local ok, err = http.with_retries(client, req, function(res)
    local e = put_answer(def, res, host)
    if e then return nil, e end
    return true
  end)
  if ok then return true end
  err = hide_url(errors.adopt(err), url)
  if err.status == 403 then err.expired = true end
  return nil, err
end

--- The presigned upload of a file checked by M.parts (info): presign, then PUT the bytes to
--- the storage host; a URL the storage host refuses with 403 (expired) gets one new presign.
--- Returns the provider's reference (upload_result of the presign answer), or nil, err with
--- err.step "presign" or "put".
function M.presigned(client, info)
  local def = client.def
  local https = client.base_url:lower():sub(1, 8) == "https://"
  local last
  for round = 1, 2 do
    local data, err = http.call(client, "POST", def.presign_path, nil, { format = info.format })
    if not data then return nil, step_error(def, "presign", err) end
    local url, ref = data.upload_url, data[def.upload_result]
    if type(url) ~= "string" or not url:lower():match("^https?://[^/?#]") or url:find("[%c ]") then
      return nil, step_error(def, "presign", errors.new("bad_response", "the answer has no usable 'upload_url'"))
    end
    if https and url:lower():sub(1, 8) ~= "https://" then
      return nil, step_error(def, "presign", errors.new("bad_response",
        "the answer's upload_url is not https (" .. host_of(url) .. ") while the API is"))
    end
    if type(ref) ~= "string" or ref == "" then
      return nil, step_error(def, "presign", errors.new("bad_response", "the answer has no '" .. def.upload_result .. "'"))
    end
    local ok, perr = put_file(client, url, info)
    if ok then return ref end
    last = step_error(def, "PUT to the storage host", perr)
    last.step = "put"
    if not perr.expired or round == 2 then break end
  end
  if last.expired then last.message = last.message .. "; again after a new presign" end
  return nil, last
end

return M
