-- taskapi.fake.model.files: the result files of tasks and the file host: each file's record
-- (a real media file or a deterministic filler), its bytes on disk (made on first need), the
-- links that point at it (with their expiry), and GET/HEAD /files/<token>/<name> with Range
-- and the file faults of FAULT_TABLE.
local B = require "taskapi.fake.model.base"
local faults = require "taskapi.fake.model.faults"
local files = require "taskapi.util.files"
local media = require "taskapi.fake.media"

local P = { Model = {} }
local Model = P.Model

local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local format, concat = string.format, table.concat
local safe_name, text_resp = B.safe_name, B.text_resp
local mkdir_p, file_size = files.mkdir_p, files.size

P.CONTENT_TYPES = {
  glb = "model/gltf-binary", gltf = "model/gltf+json", fbx = "application/octet-stream",
  obj = "text/plain", usdz = "model/vnd.usdz+zip",
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", webp = "image/webp", gif = "image/gif",
  mp4 = "video/mp4", bin = "application/octet-stream",
}

--- The deterministic content of a result file, written in 64 KiB blocks: block i starts with
--- its index in decimal (10 digits and a space) and goes on with "<seed>\n" repeated.
local BLOCK = 65536
local function block_base(seed)
  local unit = seed .. "\n"
  local reps = ceil(BLOCK / #unit)
  return string.rep(unit, reps):sub(1, BLOCK)
end

local function block(base, i)
  return format("%010d ", i) .. base:sub(12)
end

function P.generate_file(path, seed, size)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local base = block_base(seed)
  local left, i = size, 0
  while left > 0 do
    local b = block(base, i)
    if left < BLOCK then b = b:sub(1, left) end
    local ok, werr = f:write(b)
    if not ok then f:close(); os.remove(tmp); return nil, werr end
    left = left - #b
    i = i + 1
  end
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then return nil, rerr end
  return true
end

--- The bytes a result file holds from offset (0-based), length bytes: what generate_file wrote.
function P.file_bytes(seed, size, offset, length)
  offset = offset or 0
  length = min(length or size, size - offset)
  local base = block_base(seed)
  local out, pos = {}, offset
  local stop = offset + length
  while pos < stop do
    local i = floor(pos / BLOCK)
    local b = block(base, i)
    local from = pos - i * BLOCK
    local to = min(BLOCK, stop - i * BLOCK)
    out[#out + 1] = b:sub(from + 1, to)
    pos = i * BLOCK + to
  end
  return concat(out)
end

--- The bytes a file record stands for, from offset (0-based), length bytes (the whole file by
--- default): the media file or the filler. rec may be a decoded copy (GET
--- /_fake/tasks/{id}/files answers a task's records, key -> record).
function P.record_bytes(rec, offset, length)
  if rec.media then
    local b = media.bytes(rec.media, rec.tag)
    offset = offset or 0
    return b:sub(offset + 1, offset + (length or #b))
  end
  return P.file_bytes(rec.seed, rec.size, offset, length)
end

-- "bytes=a-b" -> first, last (0-based, inclusive), or false when unsatisfiable, nil when absent
-- or not understood (then the whole file is served).
function P.parse_range(value, size)
  if not value then return nil end
  local a, b = value:match("^%s*bytes%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end
  local first, last
  if a == "" then
    local n = tonumber(b)
    if n == 0 then return false end
    first, last = max(0, size - n), size - 1
  else
    first = tonumber(a)
    last = b ~= "" and tonumber(b) or size - 1
    if first >= size then return false end
    if last < first then return nil end
    last = min(last, size - 1)
  end
  return first, last
end

function Model:get_files_dir()
  if not self.files_dir then
    local p = io.popen("mktemp -d /tmp/taskapi-fake-files.XXXXXX")
    local d = p and p:read("*l")
    if p then p:close() end
    self.files_dir = d or ("/tmp/taskapi-fake-files-" .. tostring(os.time()))
  end
  if not self.files_dir_made then
    mkdir_p(self.files_dir)
    self.files_dir_made = true
  end
  return self.files_dir
end

-- Registers the file of task t under key; returns its record. A task whose spec gives no
-- file_size gets the real media file of the output's type (taskapi.fake.media: png, jpg, webp,
-- gif, glb, gltf, obj, mp4; a SellerPic video asked as webp gets the animated WebP), with
-- "taskapi-fake <id> <key>" in its metadata: {media = name, tag =, size = its length}; one
-- with a file_size, or of a type media has no file for (fbx, usdz, bin...), gets the
-- deterministic filler of that size (2048 by default): {seed =, size =}. record_bytes(rec)
-- gives the bytes of either.
function Model:file_record(t, key, filename, ext)
  local rec = t.files[key]
  if not rec then
    ext = ext and tostring(ext):lower()
    rec = {
      key = key,
      filename = filename,
      content_type = t.content_type or P.CONTENT_TYPES[ext] or "application/octet-stream",
    }
    local seed = "taskapi-fake " .. t.id .. " " .. key
    if B.is_null(t.spec and t.spec.file_size) and media.has(ext) then
      rec.media = (t.video and ext == "webp") and "webp_animated" or ext -- a video as WebP moves
      rec.tag = seed -- in the file's comment or metadata: each task's file is its own
      rec.size = #media.bytes(rec.media, rec.tag)
    else
      rec.size = t.file_size
      rec.seed = seed
    end
    t.files[key] = rec
  end
  return rec
end

-- A new link to the file of task t under key (its record made on first need).
function Model:issue_link(t, ctx, key, filename, ext)
  self:file_record(t, key, filename, ext)
  local link = { task_id = t.id, key = key, filename = filename, expires = ctx.now + self.link_ttl }
  local e = faults.take("link", t)
  if e then e.play(link, ctx) end
  local n = self:next_count()
  local token = format("%x%06x", (n * 2654435761) % 4294967296, n)
  self.links[token] = link
  return ctx.base .. "/files/" .. token .. "/" .. filename
end

-- Writes bytes to path unless a file of that size is there (through a temporary name).
local function write_once(path, bytes)
  if file_size(path) == #bytes then return true end
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(bytes)
  f:close()
  if not ok then os.remove(tmp); return nil, werr end
  return os.rename(tmp, path)
end

--- The path of a result file of a task, made on first need (one file per task and key): the
--- filler in 64 KiB chunks, or the media file with the record's tag.
function Model:file_path(t, key)
  if type(t) ~= "table" then t = self.tasks[tostring(t)] end
  local rec = t and t.files[key]
  if not rec then return nil, "no such file" end
  local stem = self:get_files_dir() .. "/" .. safe_name(t.id) .. "-" .. safe_name(key) .. "-"
  if rec.media then
    local path = stem .. media.file_name(rec.media)
    local ok, err = write_once(path, media.bytes(rec.media, rec.tag))
    if not ok then return nil, err end
    return path, rec
  end
  local path = stem .. rec.size
  if file_size(path) ~= rec.size then
    local ok, err = P.generate_file(path, rec.seed, rec.size)
    if not ok then return nil, err end
  end
  return path, rec
end

--- The record of a result file (for specs): {key=, filename=, content_type=, size=, and seed=
--- (filler) or media= and tag= (a real file of that type, the tag in its metadata)}; nil
--- before its link was issued.
function Model:file_info(task_id, key)
  local t = self.tasks[tostring(task_id)]
  return t and t.files[key]
end

-- GET /_fake/tasks/{id}/files: the task's file records, key -> record (see file_info).
function Model:file_records(task_id)
  local t = self.tasks[tostring(task_id)]
  if not t then return B.json_resp(404, { error = "no such task" }) end
  return B.json_resp(200, t.files)
end

-- GET or HEAD /files/<token>/<name>: the file answer a host serves (see the top of
-- taskapi.fake.model), Range honoured unless a fault says otherwise.
function Model:serve_file(ctx, token, name)
  local method = ctx.method
  if method ~= "GET" and method ~= "HEAD" then
    return text_resp(405, "method not allowed\n", "text/plain", { Allow = "GET, HEAD" })
  end
  local link = self.links[token]
  if not link or link.filename ~= name then return B.denied() end
  if ctx.now >= link.expires then return B.expired() end
  local t = self.tasks[link.task_id]
  if not t then return B.expired() end
  local path, rec = self:file_path(t, link.key)
  if not path then return text_resp(500, "fake: cannot make the file: " .. tostring(rec) .. "\n") end
  local size = rec.size
  local headers = {
    ["Content-Type"] = rec.content_type,
    ["Accept-Ranges"] = "bytes",
    ["Last-Modified"] = B.http_date(t.created),
    ["ETag"] = '"' .. safe_name(link.key) .. "-" .. size .. '"',
  }
  local resp = { status = 200, headers = headers, file = path, offset = 0, length = size, plain = true }
  if method == "HEAD" then resp.head = true end
  for e, v in faults.each("file", t) do e.play(resp, v, ctx) end
  if resp.ignored_range == nil then
    local first, last = P.parse_range(ctx.headers.range, size)
    if first == false then
      return text_resp(416, "range not satisfiable\n", "text/plain", { ["Content-Range"] = "bytes */" .. size })
    elseif first then
      resp.status = 206
      resp.offset, resp.length = first, last - first + 1
      headers["Content-Range"] = format("bytes %d-%d/%d", first, last, size)
    end
  end
  headers["Content-Length"] = tostring(resp.length)
  if method == "GET" then
    for e, v in faults.each("get", t) do e.play(resp, v, t, link) end
    t.first_get[link.key] = true
  end
  return resp
end

return P
