-- taskapi.ops.naming: the one place that names a downloaded file. An output of a task is saved as
-- `<task id>_<output name>.<ext>` in the destination folder (each part reduced to letters,
-- digits, - and _, so nothing a server says can leave the folder), written first to the hidden
-- part file `.<final name>.part` (outputs of other formats never share one). The extension is
-- the provider's (def.file_ext), else the link's, else the response's content type; a file
-- whose extension waits for that content type is verified under a staging name first.
local M = {}

local function safe_part(s)
  return (tostring(s):gsub("[^%w%-_]", "_"))
end

-- Extensions by content type, for a file whose link has none.
local EXT_OF_TYPE = {
  ["model/gltf-binary"] = "glb", ["model/gltf+json"] = "gltf", ["model/obj"] = "obj",
  ["model/vnd.usdz+zip"] = "usdz", ["model/stl"] = "stl", ["application/x-fbx"] = "fbx",
  ["image/png"] = "png", ["image/jpeg"] = "jpg", ["image/webp"] = "webp", ["image/gif"] = "gif",
  ["video/mp4"] = "mp4", ["video/webm"] = "webm", ["application/zip"] = "zip",
}

-- Every extension a file named by content type can have (EXT_OF_TYPE's, and "bin"), in the
-- order a search of the disk tries them.
M.TYPE_EXTS = { "glb", "gltf", "obj", "fbx", "usdz", "stl", "png", "jpg", "webp", "gif", "mp4", "webm", "zip", "bin" }

--- The extension of a link's last path segment (lower case, at most 8 characters), or nil.
function M.ext_of_url(url)
  local path = url:match("^[^?#]*") or url
  local last = path:match("([^/]*)$") or ""
  local ext = last:match("%.(%w+)$")
  if ext and #ext <= 8 then return ext:lower() end
  return nil
end

--- The extension of a response's content type ("bin" for one not listed).
function M.ext_of_type(ctype)
  return EXT_OF_TYPE[ctype or ""] or "bin"
end

--- The extension known before the transfer: the provider's rule (def.file_ext(out, opts)),
--- else the output link's; nil when only the response's content type can tell.
function M.ext_of(def, out, o)
  if def.file_ext then return def.file_ext(out, o) end
  return out.url and M.ext_of_url(out.url) or nil
end

--- The file names of output `out` of `task` in folder o.dir: with ext, the final path and its
--- part file; without, nil, the part file and the staging name the file is verified under
--- before its content type names it.
function M.names(o, task, out, ext)
  local dir = o.dir == "/" and "" or o.dir
  local base = safe_part(task.id) .. "_" .. safe_part(out.name)
  if ext then
    local name = base .. "." .. ext
    return dir .. "/" .. name, dir .. "/." .. name .. ".part"
  end
  return nil, dir .. "/." .. base .. ".part", dir .. "/." .. base .. ".done"
end

return M
