-- taskapi.fake.media: small, real files of each result type the fake serves, written in pure
-- Lua (Lua 5.4 and LuaJIT 2.1, no bit library, no C): each opens in the usual tools.
--
--   png   16 x 16 RGB gradient (zlib stored blocks, CRC-32, Adler-32)
--   jpg   16 x 16 baseline JFIF, YCbCr 4:4:4, four flat 8 x 8 blocks (DC-only Huffman data)
--   webp  16 x 16 lossless (VP8L, two colours in a checkerboard of 4 x 4 squares); as
--         "webp_animated" the same sliding over 4 frames (VP8X, ANIM, ANMF)
--   gif   16 x 16 GIF89a, 4 frames looping (LZW)
--   glb   glTF 2.0 binary: one mesh, one triangle (POSITION with min/max), 4-byte aligned chunks
--   gltf  the same as glTF JSON with the buffer in a data: URI
--   obj   the same triangle as Wavefront OBJ text
--   mp4   32 x 32 H.264 (Constrained Baseline, I_PCM macroblocks), 4 frames at 4 fps, ISO BMFF
--
--   local media = require "taskapi.fake.media"
--   media.bytes("png")   -> the file's bytes (made once, then cached), or nil for other types;
--                           "webp_animated" is the WebP animation (4 frames)
--   media.bytes("png", "task 42 model") -> the same file with that text in its comment or
--                           metadata field (each task's files differ, as a real API's do)
--   media.TYPES          -> ext -> content type, for the types media.bytes makes
local M = {}

local char, byte, rep, concat = string.char, string.byte, string.rep, table.concat
local floor = math.floor

M.TYPES = {
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", webp = "image/webp", gif = "image/gif",
  glb = "model/gltf-binary", gltf = "model/gltf+json", obj = "text/plain", mp4 = "video/mp4",
}

----------------------------------------------------------------------------------------------
-- integers (arithmetic only: the same on both runtimes)

local function bxor(a, b) -- a, b in [0, 2^32)
  local r, bit = 0, 1
  while a > 0 or b > 0 do
    if a % 2 ~= b % 2 then r = r + bit end
    a, b, bit = floor(a / 2), floor(b / 2), bit * 2
  end
  return r
end

local function be16(n) return char(floor(n / 256) % 256, n % 256) end
local function be32(n) return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256) end
local function le16(n) return char(n % 256, floor(n / 256) % 256) end
local function le32(n) return char(n % 256, floor(n / 256) % 256, floor(n / 65536) % 256, floor(n / 16777216) % 256) end
M.be32, M.le32 = be32, le32

-- IEEE 754 single precision, little-endian (finite values).
local function f32le(x)
  if x == 0 then return "\0\0\0\0" end
  local sign = 0
  if x < 0 then sign, x = 128, -x end
  local e = 0
  while x >= 2 do x, e = x / 2, e + 1 end
  while x < 1 do x, e = x * 2, e - 1 end
  local m = floor((x - 1) * 8388608 + 0.5) -- 23 bits
  local be = e + 127
  return char(m % 256, floor(m / 256) % 256, (be % 2) * 128 + floor(m / 65536) % 128, sign + floor(be / 2))
end
M.f32le = f32le

-- CRC-32 (IEEE 802.3, reflected, as PNG and zlib use it).
local crc_table
local function crc32(s)
  if not crc_table then
    crc_table = {}
    for i = 0, 255 do
      local c = i
      for _ = 1, 8 do
        if c % 2 == 1 then c = bxor(0xEDB88320, floor(c / 2)) else c = floor(c / 2) end
      end
      crc_table[i] = c
    end
  end
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bxor(crc_table[bxor(c % 256, byte(s, i))], floor(c / 256))
  end
  return bxor(c, 0xFFFFFFFF)
end
M.crc32 = crc32

-- Adler-32 of s (zlib's checksum; also the fake's record of uploaded bytes), 4 KiB at a time.
local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s, 4096 do
    local chunk = { byte(s, i, math.min(i + 4095, #s)) }
    for j = 1, #chunk do
      a = (a + chunk[j]) % 65521
      b = (b + a) % 65521
    end
  end
  return b * 65536 + a
end
M.adler32 = adler32

-- A bit writer. msb: bits go into each byte from its top (JPEG, H.264); otherwise from its
-- bottom (GIF LZW, WebP VP8L).
local function bitwriter(msb)
  local w = { out = {}, acc = 0, n = 0 }
  function w.put(value, count)
    for i = count - 1, 0, -1 do
      local b
      if msb then b = floor(value / 2 ^ i) % 2 else b = floor(value / 2 ^ (count - 1 - i)) % 2 end
      if msb then w.acc = w.acc * 2 + b else w.acc = w.acc + b * 2 ^ w.n end
      w.n = w.n + 1
      if w.n == 8 then
        w.out[#w.out + 1] = char(w.acc)
        w.acc, w.n = 0, 0
      end
    end
  end
  -- Pads the last byte with `bit` (0 or 1) and returns everything written.
  function w.finish(bit)
    while w.n ~= 0 do w.put(bit or 0, 1) end
    return concat(w.out)
  end
  function w.aligned() return w.n == 0 end
  return w
end

----------------------------------------------------------------------------------------------
-- PNG

local function png_chunk(kind, data)
  return be32(#data) .. kind .. data .. be32(crc32(kind .. data))
end

-- zlib stream of stored (uncompressed) deflate blocks.
local function zlib_stored(data)
  local out = { "\120\1" }
  local pos = 1
  repeat
    local piece = data:sub(pos, pos + 65534)
    pos = pos + #piece
    local final = pos > #data and 1 or 0
    out[#out + 1] = char(final) .. le16(#piece) .. le16(65535 - #piece) .. piece
  until pos > #data
  out[#out + 1] = be32(adler32(data))
  return concat(out)
end
M.zlib_stored = zlib_stored

local function make_png()
  local w, h = 16, 16
  local rows = {}
  for y = 0, h - 1 do
    local px = { "\0" } -- filter type 0 (None)
    for x = 0, w - 1 do px[#px + 1] = char(x * 16 + 8, y * 16 + 8, 160) end
    rows[#rows + 1] = concat(px)
  end
  local ihdr = be32(w) .. be32(h) .. char(8, 2, 0, 0, 0) -- 8-bit RGB, deflate, no filter, no interlace
  return "\137PNG\r\n\26\n" .. png_chunk("IHDR", ihdr) .. png_chunk("IDAT", zlib_stored(concat(rows))) ..
    png_chunk("IEND", "")
end

----------------------------------------------------------------------------------------------
-- JPEG (baseline, sequential, Huffman): every 8 x 8 block is flat, so each block is its DC
-- difference and an end-of-block code.

-- Canonical Huffman codes from JPEG's BITS (count per length 1..16) and HUFFVAL lists.
local function huff_codes(bits, vals)
  local codes, code, k = {}, 0, 1
  for len = 1, 16 do
    for _ = 1, bits[len] do
      codes[vals[k]] = { code = code, len = len }
      code, k = code + 1, k + 1
    end
    code = code * 2
  end
  return codes
end

-- DC table: the luminance DC table of the JPEG standard (ITU T.81, table K.3).
local DC_BITS = { 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0 }
local DC_VALS = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 }
-- AC table: only what flat blocks need, end-of-block (0x00), plus one more code (0x01).
local AC_BITS = { 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }
local AC_VALS = { 0x00, 0x01 }

local function jpeg_segment(marker, data) return char(0xFF, marker) .. be16(#data + 2) .. data end

local function make_jpeg()
  local Q = 8 -- every quantizer step; a flat block of value v has DC = (v - 128) * 8 / Q
  -- 2 x 2 blocks of 8 x 8 pixels: red, green, blue, white
  local colors = { { 220, 40, 40 }, { 40, 200, 60 }, { 40, 60, 220 }, { 240, 240, 240 } }
  local function ycc(c)
    local r, g, b = c[1], c[2], c[3]
    return { 0.299 * r + 0.587 * g + 0.114 * b, 128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
      128 + 0.5 * r - 0.418688 * g - 0.081312 * b }
  end
  local dc = huff_codes(DC_BITS, DC_VALS)
  local ac = huff_codes(AC_BITS, AC_VALS)
  local bw = bitwriter(true)
  local pred = { 0, 0, 0 }
  for _, c in ipairs(colors) do -- MCU order: block rows of the image, left to right
    local v = ycc(c)
    for comp = 1, 3 do
      local d = floor((v[comp] - 128) * 8 / Q + 0.5)
      local diff = d - pred[comp]
      pred[comp] = d
      local a, s = diff < 0 and -diff or diff, 0
      while a > 0 do a, s = floor(a / 2), s + 1 end
      bw.put(dc[s].code, dc[s].len)
      if s > 0 then bw.put(diff < 0 and diff + 2 ^ s - 1 or diff, s) end
      bw.put(ac[0].code, ac[0].len) -- EOB: every AC coefficient is zero
    end
  end
  local scan = bw.finish(1):gsub("\255", "\255\0") -- pad with 1 bits; stuff a zero after 0xFF
  local function dht(class_id, bits, vals)
    local b, v = {}, {}
    for i = 1, 16 do b[i] = char(bits[i]) end
    for i = 1, #vals do v[i] = char(vals[i]) end
    return char(class_id) .. concat(b) .. concat(v)
  end
  local sof = char(8) .. be16(16) .. be16(16) .. char(3) ..
    char(1, 0x11, 0) .. char(2, 0x11, 0) .. char(3, 0x11, 0) -- 3 components, 1 x 1 sampling, table 0
  local sos = char(3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0)
  return "\255\216" ..
    jpeg_segment(0xE0, "JFIF\0" .. char(1, 1, 0) .. be16(1) .. be16(1) .. char(0, 0)) ..
    jpeg_segment(0xDB, char(0) .. rep(char(Q), 64)) ..
    jpeg_segment(0xC0, sof) ..
    jpeg_segment(0xC4, dht(0x00, DC_BITS, DC_VALS) .. dht(0x10, AC_BITS, AC_VALS)) ..
    jpeg_segment(0xDA, sos) .. scan .. "\255\217"
end

----------------------------------------------------------------------------------------------
-- WebP (VP8L lossless): no transform, no colour cache, one prefix-code group of five "simple"
-- codes; a channel with two values costs one bit a pixel, one with a single value none.

local WEBP_A = { 230, 90, 20, 255 }  -- r, g, b, a
local WEBP_B = { 30, 140, 230, 255 }
M.WEBP_COLORS = { WEBP_A, WEBP_B }

-- The VP8L bitstream of a w x h image of two colours; at(x, y) is true where it is colour A.
local function vp8l(w, h, at)
  local bw = bitwriter(false)
  bw.put(0x2F, 8)          -- VP8L signature
  bw.put(w - 1, 14)
  bw.put(h - 1, 14)
  bw.put(0, 1)             -- alpha_is_used: no
  bw.put(0, 3)             -- version 0
  bw.put(0, 1)             -- no transform
  bw.put(0, 1)             -- no colour cache
  bw.put(0, 1)             -- no meta prefix codes
  -- the five codes, in the order green, red, blue, alpha, distance
  local channel = { 2, 1, 3, 4 } -- index into the colour of green, red, blue, alpha
  local sym = {}
  for i, ch in ipairs(channel) do
    local a, b = WEBP_A[ch], WEBP_B[ch]
    local lo, hi = math.min(a, b), math.max(a, b)
    sym[i] = { lo = lo, hi = hi }
    bw.put(1, 1)            -- simple code
    if lo == hi then
      bw.put(0, 1); bw.put(1, 1); bw.put(lo, 8) -- one symbol, 8-bit
    else
      bw.put(1, 1); bw.put(1, 1); bw.put(lo, 8); bw.put(hi, 8) -- two symbols: lo is code 0
    end
  end
  bw.put(1, 1); bw.put(0, 1); bw.put(0, 1); bw.put(0, 1) -- distance: one symbol, 0 (1-bit form)
  for y = 0, h - 1 do
    for x = 0, w - 1 do
      local c = at(x, y) and WEBP_A or WEBP_B
      for i, ch in ipairs(channel) do
        local s = sym[i]
        if s.lo ~= s.hi then bw.put(c[ch] == s.lo and 0 or 1, 1) end
      end
    end
  end
  return bw.finish(0)
end

local function riff_chunk(kind, data)
  return kind .. le32(#data) .. data .. (#data % 2 == 1 and "\0" or "")
end

local function le24(n) return le32(n):sub(1, 3) end

-- A WebP file: the RIFF header around its chunks.
local function riff_webp(body)
  return "RIFF" .. le32(4 + #body) .. "WEBP" .. body
end

-- A still image: a checkerboard of 4 x 4 squares.
local function make_webp()
  local chunk = riff_chunk("VP8L", vp8l(16, 16, function(x, y) return (floor(x / 4) + floor(y / 4)) % 2 == 0 end))
  return riff_webp(chunk)
end

-- An animation (for video results asked as WebP): VP8X + ANIM + one ANMF per frame, the
-- checkerboard sliding one pixel a frame, 4 frames of 0.25 s, looping.
local function make_webp_animated()
  local w, h, frames = 16, 16, 4
  local parts = {}
  for f = 0, frames - 1 do
    local bits = vp8l(w, h, function(x, y) return (floor((x + f) / 4) + floor(y / 4)) % 2 == 0 end)
    -- x/2, y/2, width-1, height-1, duration (ms), flags: no blending, no disposal
    parts[#parts + 1] = riff_chunk("ANMF", le24(0) .. le24(0) .. le24(w - 1) .. le24(h - 1) .. le24(250) ..
      char(0x02) .. riff_chunk("VP8L", bits))
  end
  local body = riff_chunk("VP8X", char(0x02, 0, 0, 0) .. le24(w - 1) .. le24(h - 1)) .. -- flags: animation
    riff_chunk("ANIM", char(255, 255, 255, 255) .. le16(0)) .. concat(parts)          -- loop for ever
  return riff_webp(body)
end

----------------------------------------------------------------------------------------------
-- GIF (GIF89a, LZW)

-- GIF's data sub-blocks of s: each at most 255 bytes after its length byte (no terminator).
local function gif_blocks(s)
  local out = {}
  for i = 1, #s, 255 do
    local piece = s:sub(i, i + 254)
    out[#out + 1] = char(#piece) .. piece
  end
  return concat(out)
end

-- LZW codes of GIF for `pixels` (a table of colour indices), min code size `mcs`.
local function gif_lzw(pixels, mcs)
  local clear, eoi = 2 ^ mcs, 2 ^ mcs + 1
  local bw = bitwriter(false)
  local size, next_code, dict
  local function reset()
    size, next_code, dict = mcs + 1, eoi + 1, {}
  end
  reset()
  bw.put(clear, size)
  local w = pixels[1]                       -- the code of the current string
  for i = 2, #pixels do
    local k = pixels[i]
    local key = w * 4096 + k
    local c = dict[key]
    if c then
      w = c
    else
      bw.put(w, size)
      if next_code < 4096 then
        dict[key] = next_code
        next_code = next_code + 1
        if next_code > 2 ^ size and size < 12 then size = size + 1 end
      else
        bw.put(clear, size)
        reset()
      end
      w = k
    end
  end
  bw.put(w, size)
  bw.put(eoi, size)
  return char(mcs) .. gif_blocks(bw.finish(0)) .. "\0"
end
M.gif_lzw = gif_lzw

local function make_gif()
  local w, h, frames = 16, 16, 4
  local palette = char(250, 250, 250, 200, 30, 30, 30, 160, 60, 30, 60, 200) -- 4 colours
  local out = { "GIF89a", le16(w), le16(h), char(0xF1, 0, 0), palette,
    -- NETSCAPE2.0: loop for ever
    "\33\255\11NETSCAPE2.0\3\1" .. le16(0) .. "\0" }
  for f = 0, frames - 1 do
    local px = {}
    for y = 0, h - 1 do
      for x = 0, w - 1 do
        -- a 6 x 6 square moving along the diagonal, its colour changing each frame
        local inside = x >= f * 3 and x < f * 3 + 6 and y >= f * 3 and y < f * 3 + 6
        px[#px + 1] = inside and 1 + f % 3 or 0
      end
    end
    out[#out + 1] = "\33\249\4" .. char(0x04) .. le16(25) .. char(0, 0) -- 0.25 s, keep frame
    out[#out + 1] = "\44" .. le16(0) .. le16(0) .. le16(w) .. le16(h) .. "\0"
    out[#out + 1] = gif_lzw(px, 2)
  end
  out[#out + 1] = "\59"
  return concat(out)
end

----------------------------------------------------------------------------------------------
-- glTF 2.0: one triangle

M.TRIANGLE = { { 0, 0, 0 }, { 1, 0, 0 }, { 0, 1, 0 } }

local function triangle_buffer()
  local parts = {}
  for _, v in ipairs(M.TRIANGLE) do
    for _, x in ipairs(v) do parts[#parts + 1] = f32le(x) end
  end
  return concat(parts)
end

local function json_string(str)
  return '"' .. str:gsub('[%c"\\]', function(c) return string.format("\\u%04x", byte(c)) end) .. '"'
end

local function gltf_json(buffer_len, uri, tag)
  local min, max = { math.huge, math.huge, math.huge }, { -math.huge, -math.huge, -math.huge }
  for _, v in ipairs(M.TRIANGLE) do
    for i = 1, 3 do
      if v[i] < min[i] then min[i] = v[i] end
      if v[i] > max[i] then max[i] = v[i] end
    end
  end
  local function vec(t) return "[" .. concat({ string.format("%g", t[1]), string.format("%g", t[2]), string.format("%g", t[3]) }, ",") .. "]" end
  return concat({
    '{"asset":{"version":"2.0","generator":"taskapi fake provider"',
    tag and (',"extras":{"source":' .. json_string(tag) .. '}') or "", '},',
    '"scene":0,"scenes":[{"nodes":[0]}],"nodes":[{"mesh":0,"name":"triangle"}],',
    '"meshes":[{"primitives":[{"attributes":{"POSITION":0},"mode":4}]}],',
    '"accessors":[{"bufferView":0,"byteOffset":0,"componentType":5126,"count":3,"type":"VEC3",',
    '"min":', vec(min), ',"max":', vec(max), '}],',
    '"bufferViews":[{"buffer":0,"byteOffset":0,"byteLength":', tostring(buffer_len), ',"target":34962}],',
    '"buffers":[{', uri and ('"uri":"' .. uri .. '",') or "", '"byteLength":', tostring(buffer_len), '}]}',
  })
end

local function make_glb(tag)
  local bin = triangle_buffer()
  local js = gltf_json(#bin, nil, tag)
  js = js .. rep(" ", (4 - #js % 4) % 4)          -- JSON chunk padded with spaces
  bin = bin .. rep("\0", (4 - #bin % 4) % 4)      -- BIN chunk padded with zeros
  local body = le32(#js) .. "JSON" .. js .. le32(#bin) .. "BIN\0" .. bin
  return "glTF" .. le32(2) .. le32(12 + #body) .. body
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { floor(n / 262144) % 64, floor(n / 4096) % 64, floor(n / 64) % 64, n % 64 }
    out[#out + 1] = B64:sub(q[1] + 1, q[1] + 1) .. B64:sub(q[2] + 1, q[2] + 1) ..
      (b and B64:sub(q[3] + 1, q[3] + 1) or "=") .. (c and B64:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return concat(out)
end

local function make_gltf(tag)
  local bin = triangle_buffer()
  return gltf_json(#bin, "data:application/octet-stream;base64," .. base64(bin), tag) .. "\n"
end

local function make_obj()
  local out = { "# taskapi fake provider: one triangle\no triangle\n" }
  for _, v in ipairs(M.TRIANGLE) do out[#out + 1] = string.format("v %g %g %g\n", v[1], v[2], v[3]) end
  out[#out + 1] = "f 1 2 3\n"
  return concat(out)
end

----------------------------------------------------------------------------------------------
-- MP4: H.264 Constrained Baseline whose macroblocks are all I_PCM (raw samples, no transform),
-- every frame an IDR picture, in an ISO BMFF file (ftyp, moov with one avc1 track, mdat).

-- An RBSP with H.264's Exp-Golomb codes.
local function rbsp()
  local bw = bitwriter(true)
  function bw.ue(v)
    local n, x = 0, v + 1
    while x > 1 do x, n = floor(x / 2), n + 1 end
    bw.put(0, n)
    bw.put(v + 1, n + 1)
  end
  function bw.se(v) bw.ue(v > 0 and 2 * v - 1 or -2 * v) end
  function bw.trailing() bw.put(1, 1) return bw.finish(0) end
  return bw
end

-- A NAL unit: header byte, payload with emulation prevention (00 00 0x, x <= 3 -> 00 00 03 0x).
local function nal(ref_idc, kind, payload)
  local out, zeros = { char(ref_idc * 32 + kind) }, 0
  for i = 1, #payload do
    local b = byte(payload, i)
    if zeros >= 2 and b <= 3 then out[#out + 1] = "\3"; zeros = 0 end
    out[#out + 1] = char(b)
    if b == 0 then zeros = zeros + 1 else zeros = 0 end
  end
  return concat(out)
end

M.MP4 = { width = 32, height = 32, frames = 4, timescale = 1000, frame_ms = 250 }

local function h264_sps(mbs_w, mbs_h)
  local b = rbsp()
  b.put(66, 8)     -- profile_idc: Baseline
  b.put(0xC0, 8)   -- constraint_set0 and constraint_set1 (Constrained Baseline)
  b.put(10, 8)     -- level_idc 1.0
  b.ue(0)          -- seq_parameter_set_id
  b.ue(0)          -- log2_max_frame_num_minus4
  b.ue(2)          -- pic_order_cnt_type 2 (output order = decoding order)
  b.ue(1)          -- max_num_ref_frames
  b.put(0, 1)      -- gaps_in_frame_num_value_allowed_flag
  b.ue(mbs_w - 1)  -- pic_width_in_mbs_minus1
  b.ue(mbs_h - 1)  -- pic_height_in_map_units_minus1
  b.put(1, 1)      -- frame_mbs_only_flag
  b.put(1, 1)      -- direct_8x8_inference_flag
  b.put(0, 1)      -- frame_cropping_flag
  b.put(0, 1)      -- vui_parameters_present_flag
  return nal(3, 7, b.trailing())
end

local function h264_pps()
  local b = rbsp()
  b.ue(0)          -- pic_parameter_set_id
  b.ue(0)          -- seq_parameter_set_id
  b.put(0, 1)      -- entropy_coding_mode_flag: CAVLC
  b.put(0, 1)      -- bottom_field_pic_order_in_frame_present_flag
  b.ue(0)          -- num_slice_groups_minus1
  b.ue(0)          -- num_ref_idx_l0_default_active_minus1
  b.ue(0)          -- num_ref_idx_l1_default_active_minus1
  b.put(0, 1)      -- weighted_pred_flag
  b.put(0, 2)      -- weighted_bipred_idc
  b.se(0)          -- pic_init_qp_minus26
  b.se(0)          -- pic_init_qs_minus26
  b.se(0)          -- chroma_qp_index_offset
  b.put(1, 1)      -- deblocking_filter_control_present_flag
  b.put(0, 1)      -- constrained_intra_pred_flag
  b.put(0, 1)      -- redundant_pic_cnt_present_flag
  return nal(3, 8, b.trailing())
end

-- One IDR picture; sample(x, y) -> Y, Cb, Cr (16..235) of pixel x, y.
local function h264_idr(idr_id, mbs_w, mbs_h, sample)
  local b = rbsp()
  b.ue(0)          -- first_mb_in_slice
  b.ue(7)          -- slice_type: I (every slice of the picture)
  b.ue(0)          -- pic_parameter_set_id
  b.put(0, 4)      -- frame_num (log2_max_frame_num = 4)
  b.ue(idr_id)     -- idr_pic_id (differs between consecutive IDR pictures)
  b.put(0, 1)      -- no_output_of_prior_pics_flag
  b.put(0, 1)      -- long_term_reference_flag
  b.se(0)          -- slice_qp_delta
  b.ue(1)          -- disable_deblocking_filter_idc: off
  for my = 0, mbs_h - 1 do
    for mx = 0, mbs_w - 1 do
      b.ue(25)     -- mb_type I_PCM
      while not b.aligned() do b.put(0, 1) end -- pcm_alignment_zero_bit
      local y, cb, cr = {}, {}, {}
      for j = 0, 15 do
        for i = 0, 15 do
          local Y, U, V = sample(mx * 16 + i, my * 16 + j)
          y[#y + 1] = char(Y)
          if i % 2 == 0 and j % 2 == 0 then cb[#cb + 1], cr[#cr + 1] = char(U), char(V) end
        end
      end
      b.out[#b.out + 1] = concat(y) .. concat(cb) .. concat(cr) -- aligned: whole bytes
    end
  end
  return nal(3, 5, b.trailing())
end

local function box(kind, ...)
  local body = concat({ ... })
  return be32(8 + #body) .. kind .. body
end
local function fullbox(kind, version, flags, ...)
  return box(kind, char(version) .. be32(flags):sub(2), ...)
end

local function make_mp4()
  local p = M.MP4
  local mbs_w, mbs_h = p.width / 16, p.height / 16
  local sps, pps = h264_sps(mbs_w, mbs_h), h264_pps()
  local samples = {}
  for f = 0, p.frames - 1 do
    -- grey background, a 12 x 12 square moving right, its colour changing each frame
    local frame = h264_idr(f % 2, mbs_w, mbs_h, function(x, y)
      if x >= 2 + f * 6 and x < 14 + f * 6 and y >= 10 and y < 22 then
        return 120 + f * 20, 60 + f * 40, 200 - f * 40
      end
      return 110, 128, 128
    end)
    samples[#samples + 1] = be32(#frame) .. frame
  end
  local duration = p.frames * p.frame_ms * p.timescale / 1000
  local matrix = be32(0x00010000) .. be32(0) .. be32(0) .. be32(0) .. be32(0x00010000) .. be32(0) ..
    be32(0) .. be32(0) .. be32(0x40000000)
  local avcc = box("avcC", char(1, byte(sps, 2), byte(sps, 3), byte(sps, 4), 0xFF, 0xE1), be16(#sps), sps,
    char(1), be16(#pps), pps)
  local compressor = "\0" .. rep("\0", 31)
  local avc1 = box("avc1", rep("\0", 6), be16(1), rep("\0", 16), be16(p.width), be16(p.height),
    be32(0x00480000), be32(0x00480000), be32(0), be16(1), compressor, be16(0x18), be16(0xFFFF), avcc)
  local sizes = {}
  for i, s in ipairs(samples) do sizes[i] = be32(#s) end
  local function moov(mdat_offset)
    local stbl = box("stbl",
      fullbox("stsd", 0, 0, be32(1), avc1),
      fullbox("stts", 0, 0, be32(1), be32(p.frames), be32(p.frame_ms * p.timescale / 1000)),
      fullbox("stsc", 0, 0, be32(1), be32(1), be32(p.frames), be32(1)),
      fullbox("stsz", 0, 0, be32(0), be32(p.frames), concat(sizes)),
      fullbox("stco", 0, 0, be32(1), be32(mdat_offset)))
    local minf = box("minf", fullbox("vmhd", 0, 1, be16(0), be16(0), be16(0), be16(0)),
      box("dinf", fullbox("dref", 0, 0, be32(1), fullbox("url ", 0, 1))), stbl)
    local mdia = box("mdia",
      fullbox("mdhd", 0, 0, be32(0), be32(0), be32(p.timescale), be32(duration), be16(0x55C4), be16(0)), -- und
      fullbox("hdlr", 0, 0, be32(0), "vide", rep("\0", 12), "VideoHandler\0"),
      minf)
    local tkhd = fullbox("tkhd", 0, 3, be32(0), be32(0), be32(1), be32(0), be32(duration), rep("\0", 8),
      be16(0), be16(0), be16(0), be16(0), matrix, be32(p.width * 65536), be32(p.height * 65536))
    return box("moov",
      fullbox("mvhd", 0, 0, be32(0), be32(0), be32(p.timescale), be32(duration), be32(0x00010000), be16(0x0100),
        rep("\0", 10), matrix, rep("\0", 24), be32(2)),
      box("trak", tkhd, mdia))
  end
  local ftyp = box("ftyp", "isom", be32(512), "isom", "iso2", "avc1", "mp41")
  local data = concat(samples)
  local head = #ftyp + #moov(0) + 8
  return ftyp .. moov(head) .. box("mdat", data)
end

----------------------------------------------------------------------------------------------

local MAKERS = {
  png = make_png, jpg = make_jpeg, jpeg = make_jpeg, webp = make_webp, gif = make_gif,
  webp_animated = make_webp_animated, glb = make_glb, gltf = make_gltf, obj = make_obj, mp4 = make_mp4,
}

----------------------------------------------------------------------------------------------
-- tags: a text (printable ASCII) written into a file's own comment or metadata field, so that
-- each task's file is its own while staying a valid file of its type

-- EXIF for WebP: a little-endian TIFF header and one IFD holding ImageDescription (ASCII).
local function exif(tag)
  local text = tag .. "\0"
  return "II" .. le16(42) .. le32(8) .. le16(1) .. le16(0x010E) .. le16(2) .. le32(#text) .. le32(26) ..
    le32(0) .. text
end

-- base: the untagged file of the type
local TAGGERS = {
  -- a tEXt chunk (keyword Comment) before IEND (the last 12 bytes)
  png = function(base, tag) return base:sub(1, -13) .. png_chunk("tEXt", "Comment\0" .. tag) .. base:sub(-12) end,
  -- a COM segment right after SOI and the JFIF APP0 segment (2 + 18 bytes)
  jpg = function(base, tag) return base:sub(1, 20) .. jpeg_segment(0xFE, tag) .. base:sub(21) end,
  -- a comment extension before the trailer
  gif = function(base, tag) return base:sub(1, -2) .. "\33\254" .. gif_blocks(tag) .. "\0;" end,
  -- the extended format: VP8X (EXIF flag), the VP8L chunk, an EXIF chunk
  webp = function(base, tag)
    local body = riff_chunk("VP8X", char(0x08, 0, 0, 0) .. le24(15) .. le24(15)) .. base:sub(13) ..
      riff_chunk("EXIF", exif(tag))
    return riff_webp(body)
  end,
  -- the VP8X flags gain EXIF; an EXIF chunk after the frames
  webp_animated = function(base, tag)
    local body = base:sub(13, 20) .. char(byte(base, 21) + 0x08) .. base:sub(22) .. riff_chunk("EXIF", exif(tag))
    return riff_webp(body)
  end,
  glb = function(_, tag) return make_glb(tag) end,
  gltf = function(_, tag) return make_gltf(tag) end,
  obj = function(base, tag) return base .. "# " .. tag .. "\n" end,
  -- a top-level free box after mdat (readers skip it)
  mp4 = function(base, tag) return base .. box("free", tag) end,
}
TAGGERS.jpeg = TAGGERS.jpg

local cache = {}

--- The bytes of the file of type name (a file name extension, lower case, or "webp_animated"),
--- or nil when the fake has no real file of that type. tag (optional): a text written into
--- the file's comment or metadata (PNG tEXt, JPEG COM, GIF comment, WebP EXIF, glTF
--- asset.extras.source, an OBJ comment, an MP4 free box); bytes outside printable ASCII become
--- "_". The untagged files are made once and cached; a tagged one is made from them.
function M.bytes(name, tag)
  name = name and tostring(name):lower()
  local make = MAKERS[name]
  if not make then return nil end
  local b = cache[name]
  if not b then
    b = make()
    cache[name] = b
  end
  if tag == nil then return b end
  tag = tostring(tag):gsub("[^\32-\126]", "_")
  return TAGGERS[name](b, tag)
end

--- A file name for the file of media.bytes(name): result.<ext> (result-animated.webp).
function M.file_name(name)
  if name == "webp_animated" then return "result-animated.webp" end
  return "result." .. tostring(name)
end

--- Is there a real file of type ext?
function M.has(ext)
  return MAKERS[ext and tostring(ext):lower()] ~= nil
end

return M
