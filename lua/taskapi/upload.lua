-- taskapi.upload: the checks of client:upload before any request, and the multipart parts
-- they turn into. The file itself is never read into Lua: only its first bytes (to know its
-- type) and its size; the C module streams it (req.mime). What differs per provider is data in
-- the provider definition: upload_path, upload_field, upload_max_bytes, upload_result.
local errors = require "taskapi.errors"

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
--- parts of req.mime and the file's size, or nil, err (invalid_argument naming the problem).
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
  if limit and size > limit then
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
  return { { name = def.upload_field or "file", path = path, type = ctype, filename = filename } }, size
end

return M
