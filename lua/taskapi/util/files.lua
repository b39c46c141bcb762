-- taskapi.util.files: the small file and shell helpers the library, the fake provider and the
-- specs share (plain io and os, the same on Lua 5.4 and LuaJIT).
local M = {}

--- This process's id (from /proc/self/stat: plain Lua has no getpid), or 0.
function M.pid()
  return tonumber((M.read("/proc/self/stat") or ""):match("^(%d+)")) or 0
end

--- A string quoted for sh.
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command; returns its standard output without trailing white space.
function M.sh(cmd)
  local p = io.popen(cmd)
  if not p then return nil end
  local out = p:read("*a") or ""
  p:close()
  return (out:gsub("%s+$", ""))
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- True for a folder (opening "<path>/." fails for anything else).
function M.is_dir(path)
  local f = io.open(path .. "/.", "rb")
  if f then f:close() return true end
  return false
end

--- The size in bytes, or nil when the file cannot be opened.
function M.size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

--- The whole file (or its first n bytes), or nil.
function M.read(path, n)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read(n or "*a")
  f:close()
  return s
end

function M.write(path, s)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(s)
  f:close()
  return true
end

function M.mkdir_p(dir)
  return os.execute("mkdir -p " .. M.quote(dir))
end

--- A new temporary folder under /tmp.
function M.tmpdir(prefix)
  return M.sh("mktemp -d /tmp/" .. (prefix or "taskapi") .. ".XXXXXX")
end

--- Removes a folder made by tmpdir (refuses anything outside /tmp).
function M.rmdir(dir)
  if type(dir) == "string" and dir:match("^/tmp/.") and not dir:find("..", 1, true) then
    os.execute("rm -rf " .. M.quote(dir))
  end
end

return M
