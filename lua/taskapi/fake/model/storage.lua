-- taskapi.fake.model.storage: the object storage behind V3's presigned uploads: PUT
-- /storage/uploads/<upload id>/<name> (raw bytes, no API key) and its scripted faults (POST
-- /_fake/storage_faults): statuses of the next presigns and PUTs, upload URLs that point
-- nowhere or carry a signature query.
local B = require "taskapi.fake.model.base"
local multipart = require "taskapi.fake.model.multipart"

local P = { Model = {} }
local Model = P.Model

local floor = math.floor
local format = string.format
local json_resp, text_resp = B.json_resp, B.text_resp

-- PUT <base>/storage/uploads/<upload id>/<name>: the raw bytes of a presigned upload, taken
-- without an API key (the log records whether an Authorization header came anyway). Answers
-- like object storage: 200 with an ETag, 403 XML for an unknown or expired URL.
function Model:serve_storage(ctx)
  local upload, name = ctx.path:match("^/storage/uploads/([^/]+)/([^/]+)$")
  local rec = upload and self.presigned[upload]
  if not rec or rec.name ~= name then return B.denied() end
  if ctx.method ~= "PUT" then
    return text_resp(405, "method not allowed\n", "text/plain", { Allow = "PUT" })
  end
  if ctx.now >= rec.expires then return B.expired() end
  local fault = self:storage_fault()
  if fault then return fault end
  local data = ctx.body or ""
  local sum = multipart.adler32(data)
  if ctx.log then
    ctx.log.upload = { filename = name, content_type = ctx.headers["content-type"], size = #data, adler32 = sum }
  end
  local tok = self.file_tokens[rec.token]
  if tok then tok.ready, tok.size, tok.adler32 = true, #data, sum end
  return text_resp(200, "", "text/plain", { ETag = '"' .. sum .. '"' })
end

-- POST /_fake/storage_faults {"presign": [status, ...], "put": [status, ...], "down": n}: the
-- next presign calls answer these statuses (a V3 error: 429 code 1007, 5xx 1000, others 1004),
-- the next PUTs to a valid upload_url answer these (403: the expired-URL XML; others a text
-- body), the next n presign answers point upload_url at 127.0.0.1:1, where nothing listens
-- ("down": n), and the next n upload_urls carry a signature query like object storage's
-- ("sign": n; the storage route ignores it). Each is used up in order; reset clears them.
function Model:set_storage_faults(ctx)
  local spec, err = B.decode_json(ctx.body or "")
  if type(spec) ~= "table" then
    return json_resp(400, { error = "the body must be a JSON object: " .. tostring(err or "not an object") })
  end
  local f = self.storage_faults
  for _, k in ipairs({ "presign", "put" }) do
    local list = spec[k]
    if list ~= nil and not B.is_null(list) then
      if type(list) ~= "table" then return json_resp(400, { error = k .. " must be an array of HTTP statuses" }) end
      for _, st in ipairs(list) do
        if type(st) ~= "number" or st < 100 or st > 599 then
          return json_resp(400, { error = k .. " must be an array of HTTP statuses" })
        end
        f[k][#f[k] + 1] = floor(st)
      end
    end
  end
  if tonumber(spec.down) then f.down = f.down + floor(tonumber(spec.down)) end
  if tonumber(spec.sign) then f.sign = f.sign + floor(tonumber(spec.sign)) end
  return json_resp(200, { presign = #f.presign, put = #f.put, down = f.down, sign = f.sign })
end

-- The answer of the next presign when one is scripted, else nil.
function Model:presign_fault()
  local st = table.remove(self.storage_faults.presign, 1)
  if not st then return nil end
  local code = st == 429 and 1007 or st >= 500 and 1000 or 1004
  return self:reply_tripo_v3(st, code, "fake presign fault (HTTP " .. st .. ")", "scripted by /_fake/storage_faults")
end

-- The answer of the next storage PUT when one is scripted, else nil.
function Model:storage_fault()
  local st = table.remove(self.storage_faults.put, 1)
  if not st then return nil end
  if st == 403 then return B.expired() end
  return text_resp(st, "fake storage fault (HTTP " .. st .. ")\n", "text/plain")
end

-- The origin of the next upload_url: the request's, or 127.0.0.1:1 while "down" lasts.
function Model:storage_base(ctx)
  local f = self.storage_faults
  if f.down > 0 then
    f.down = f.down - 1
    return "http://127.0.0.1:1"
  end
  return ctx.base
end

-- The query of the next upload_url: "" or, while "sign" lasts, a signature like object storage's.
function Model:storage_query(n)
  local f = self.storage_faults
  if f.sign <= 0 then return "" end
  f.sign = f.sign - 1
  return format("?X-Amz-Expires=%d&X-Amz-Signature=fakesig%08x", self.presign_ttl, (n * 2654435761) % 4294967296)
end

return P
