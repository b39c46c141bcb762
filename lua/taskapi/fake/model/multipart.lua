-- taskapi.fake.model.multipart: the uploads the APIs take as multipart/form-data: the body
-- split into its parts, the file part of a field, and the log's record of an upload
-- (filename, content type, size, Adler-32 of the bytes).
local media = require "taskapi.fake.media"

local P = { Model = {} }
local Model = P.Model

-- Multipart parsing: every part of a multipart/form-data body as {name=, filename=,
-- content_type=, size=, data=} in order, or nil, reason.
function P.multipart_parts(headers, body)
  local ct = headers["content-type"] or ""
  if not ct:lower():match("^%s*multipart/form%-data") then return nil, "not multipart/form-data" end
  local boundary = ct:match("[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=\"([^\"]+)\"") or ct:match("[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  if not boundary then return nil, "multipart without a boundary" end
  body = body or ""
  local delim = "--" .. boundary
  local pos = body:find(delim, 1, true)
  if not pos then return nil, "multipart body without its boundary" end
  local parts = {}
  while true do
    local after = pos + #delim
    if body:sub(after, after + 1) == "--" then break end -- closing delimiter
    local hstart = body:find("\r\n", after, true)
    if not hstart then return nil, "truncated multipart body" end
    local hend = body:find("\r\n\r\n", hstart, true)
    if not hend then return nil, "truncated multipart part headers" end
    local head = body:sub(hstart + 2, hend - 1)
    local nextpos = body:find("\r\n" .. delim, hend + 4, true)
    if not nextpos then return nil, "truncated multipart body (no closing boundary)" end
    local disp = head:match("[Cc]ontent%-[Dd]isposition:%s*([^\r\n]*)") or ""
    parts[#parts + 1] = {
      name = disp:match('[%s;]name="([^"]*)"') or disp:match("[%s;]name=([^;%s]+)"),
      filename = disp:match('filename="([^"]*)"') or disp:match("filename=([^;%s]+)"),
      content_type = head:match("[Cc]ontent%-[Tt]ype:%s*([^\r\n]*)"),
      size = nextpos - (hend + 4),
      data = body:sub(hend + 4, nextpos - 1),
    }
    pos = nextpos + 2
  end
  return parts
end

-- A checksum of a string (Adler-32 as 8 hex digits), for the log's record of uploads.
function P.adler32(s)
  return string.format("%08x", media.adler32(s))
end

-- The part named `field` that carries a filename: {name=, filename=, size=, content_type=,
-- data=}, or nil, reason.
function P.multipart_file(headers, body, field)
  local parts, err = P.multipart_parts(headers, body)
  if not parts then return nil, err end
  for _, p in ipairs(parts) do
    if p.name == field and p.filename then return p end
  end
  return nil, "no file part named '" .. field .. "'"
end

-- The uploaded file part (multipart field "file"); recorded in the request's log entry as
-- upload = {filename=, content_type=, size=, adler32=} so specs can check the bytes arrived.
function Model:upload_part(ctx)
  local part, err = P.multipart_file(ctx.headers, ctx.body, "file")
  if part and ctx.log then
    ctx.log.upload = { filename = part.filename, content_type = part.content_type, size = part.size,
      adler32 = P.adler32(part.data) }
  end
  return part, err
end

return P
