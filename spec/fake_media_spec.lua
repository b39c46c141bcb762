-- taskapi.fake.media: the fake's result files are real, small files of their type. The pure-Lua
-- writer is checked by its own checksums and structure, then every file is opened by the
-- system's tools (file, PIL, gifsicle, ImageMagick, ffprobe/ffmpeg, pngcheck, djpeg, dwebp, a
-- glTF 2.0 structure check in python3, the Khronos glTF validator when node has it); a missing
-- tool leaves its test pending with the package to install. Last, the nginx fake serves them
-- to the real client: a task without file_size gets the media file of each output's type with
-- its content type; one with a file_size keeps the deterministic filler.
local media = require "taskapi.fake.media"
local model = require "taskapi.fake.model"
local fe = require "support.fake_env"

local q, sh = fe.q, fe.sh

-- The client of Tripo's V2 API (the outputs model, pbr_model, ... these specs name): "tripo"
-- here, "tripo-v2" where the library also speaks V3 as "tripo".
local TRIPO = "tripo"
for _, p in ipairs(fe.PROVIDERS) do if p == "tripo-v2" then TRIPO = p end end

-- name -> {ext=, content type=, what `file -b` says, PIL's format and frame count}
local KINDS = {
  png = { ext = "png", ct = "image/png", file = "^PNG image data, 16 x 16, 8%-bit/color RGB", pil = "PNG", frames = 1 },
  jpg = { ext = "jpg", ct = "image/jpeg", file = "^JPEG image data, JFIF standard 1%.01.*baseline.*16x16, components 3",
    pil = "JPEG", frames = 1 },
  webp = { ext = "webp", ct = "image/webp", file = "Web/P image", pil = "WEBP", frames = 1 },
  webp_animated = { ext = "webp", ct = "image/webp", file = "Web/P image", pil = "WEBP", frames = 4 },
  gif = { ext = "gif", ct = "image/gif", file = "^GIF image data, version 89a, 16 x 16", pil = "GIF", frames = 4 },
  glb = { ext = "glb", ct = "model/gltf-binary", file = "^glTF binary model, version 2, length %d+ bytes" },
  gltf = { ext = "gltf", ct = "model/gltf+json", file = "JSON" },
  obj = { ext = "obj", ct = "text/plain", file = "text" },
  mp4 = { ext = "mp4", ct = "video/mp4", file = "^ISO Media" },
}
local NAMES = {}
for name in pairs(KINDS) do NAMES[#NAMES + 1] = name end
table.sort(NAMES)

local function have(cmd) return sh("command -v " .. cmd .. " 2>/dev/null") ~= "" end

-- sh with the exit code: ok, output (stdout and stderr)
local function run(cmd)
  local out = sh("(" .. cmd .. ") 2>&1; echo \"rc=$?\"")
  local text, rc = out:match("^(.-)\n?rc=(%d+)%s*$")
  return tonumber(rc) == 0, text or out
end

-- a python3 that has PIL (Debian's python3-pil is for /usr/bin/python3)
local PIL_PY
for _, py in ipairs({ "python3", "/usr/bin/python3" }) do
  if not PIL_PY and have(py) and run(py .. " -c 'import PIL.Image'") then PIL_PY = py end
end
local PY = have("python3") and "python3" or (have("/usr/bin/python3") and "/usr/bin/python3" or nil)

local function u32le(s, i) local a, b, c, d = s:byte(i, i + 3) return a + b * 256 + c * 65536 + d * 16777216 end
local function u32be(s, i) local a, b, c, d = s:byte(i, i + 3) return d + c * 256 + b * 65536 + a * 16777216 end

describe("taskapi.fake.media (pure Lua)", function()
  it("computes CRC-32, Adler-32 and float32 as the standards do", function()
    assert.equal(0xCBF43926, media.crc32("123456789"))
    assert.equal(0x11E60398, media.adler32("Wikipedia"))
    assert.equal("\0\0\128\63", media.f32le(1))
    assert.equal("\0\0\0\192", media.f32le(-2))
    assert.equal("\0\0\0\63", media.f32le(0.5))
    assert.equal("\0\0\0\0", media.f32le(0))
  end)

  it("makes each type once, small and with its signature; knows no other type", function()
    local magic = { png = "^\137PNG\r\n\26\n", jpg = "^\255\216\255\224", webp = "^RIFF....WEBPVP8L",
      webp_animated = "^RIFF....WEBPVP8X", gif = "^GIF89a", glb = "^glTF\2\0\0\0", gltf = '^{"asset":{"version":"2%.0"',
      obj = "^# taskapi", mp4 = "^\0\0\0 ftypisom" }
    for _, name in ipairs(NAMES) do
      local b = media.bytes(name)
      assert.is_string(b, name)
      assert.truthy(b:match(magic[name]), name .. " lacks its signature")
      assert.is_true(#b >= 60 and #b <= 16384, name .. " is " .. #b .. " bytes")
      assert.equal(b, media.bytes(name)) -- cached: the same string
      assert.is_true(media.has(name))
    end
    assert.equal(media.bytes("jpg"), media.bytes("JPEG"))
    assert.is_nil(media.bytes("fbx"))
    assert.is_nil(media.bytes(nil))
    assert.is_false(media.has("bin"))
  end)

  it("writes a tag into each type's comment or metadata, printable ASCII only", function()
    for _, name in ipairs(NAMES) do
      local plain, a, b = media.bytes(name), media.bytes(name, "task A model"), media.bytes(name, "task B model")
      assert.truthy(a:find("task A model", 1, true), name)
      assert.not_equal(a, b)
      assert.equal(a, media.bytes(name, "task A model")) -- deterministic
      assert.equal(plain, media.bytes(name))              -- the untagged file is unchanged
      assert.is_true(#a > #plain, name)
      assert.equal(plain:sub(1, 4), a:sub(1, 4), name)    -- the same kind of file
      assert.truthy(media.bytes(name, "caf\195\169\n"):find("caf__", 1, true), name)
    end
    assert.is_nil(media.bytes("fbx", "x"))
  end)

  it("writes PNG chunks whose CRC-32 and zlib Adler-32 hold (a tag in a tEXt chunk)", function()
    local function chunks(b)
      local pos, kinds, data = 9, {}, {}
      while pos <= #b do
        local len, kind = u32be(b, pos), b:sub(pos + 4, pos + 7)
        local d = b:sub(pos + 8, pos + 7 + len)
        assert.equal(media.crc32(kind .. d), u32be(b, pos + 8 + len), "CRC of " .. kind)
        kinds[#kinds + 1] = kind
        data[kind] = (data[kind] or "") .. d
        pos = pos + 12 + len
      end
      assert.equal(#b + 1, pos)
      return kinds, data
    end
    local kinds, data = chunks(media.bytes("png"))
    assert.same({ "IHDR", "IDAT", "IEND" }, kinds)
    -- zlib: header, one final stored block of 16 rows of (filter byte + 48 bytes), Adler-32
    local idat = data.IDAT
    assert.equal("\120\1\1", idat:sub(1, 3))
    local raw = idat:sub(8, -5)
    assert.equal(16 * 49, #raw)
    assert.equal(media.adler32(raw), u32be(idat, #idat - 3))
    kinds, data = chunks(media.bytes("png", "a tag"))
    assert.same({ "IHDR", "IDAT", "tEXt", "IEND" }, kinds)
    assert.equal("Comment\0a tag", data.tEXt)
  end)

  it("writes a GLB of 4-byte aligned JSON and BIN chunks whose accessor bounds hold", function()
    local b = media.bytes("glb")
    assert.equal(#b, u32le(b, 9))
    local jlen = u32le(b, 13)
    assert.equal("JSON", b:sub(17, 20))
    assert.equal(0, jlen % 4)
    local js = b:sub(21, 20 + jlen)
    local blen = u32le(b, 21 + jlen)
    assert.equal("BIN\0", b:sub(25 + jlen, 28 + jlen))
    assert.equal(0, blen % 4)
    assert.equal(#b, 28 + jlen + blen)
    local doc = require("cjson").decode(js)
    assert.equal("2.0", doc.asset.version)
    local acc = doc.accessors[doc.meshes[1].primitives[1].attributes.POSITION + 1]
    assert.same({ 0, 0, 0 }, acc.min)
    assert.same({ 1, 1, 0 }, acc.max)
    assert.equal(36, doc.buffers[1].byteLength)
    assert.equal(media.f32le(1), b:sub(29 + jlen + 12, 29 + jlen + 15)) -- vertex 2, x
  end)
end)

-- A tag with what must not break a file: quotes, markup, a backslash, bytes outside ASCII, and
-- more than one GIF sub-block (255 bytes).
local TAG = 'taskapi-fake "7f3a" <a&b> \\ caf\195\169 ' .. string.rep("x", 300)

describe("the media files open in the system's tools", function()
  local dir
  -- each file twice: as media.bytes makes it, and with TAG in its metadata
  local variants = {}
  setup(function()
    dir = fe.tmpdir()
    for _, v in ipairs({ { label = "plain" }, { label = "tagged", tag = TAG } }) do
      v.dir = dir .. "/" .. v.label
      os.execute("mkdir " .. q(v.dir))
      v.paths = {}
      for _, name in ipairs(NAMES) do
        v.paths[name] = v.dir .. "/" .. name .. "." .. KINDS[name].ext
        fe.write(v.paths[name], media.bytes(name, v.tag))
      end
      variants[#variants + 1] = v
    end
  end)
  teardown(function() fe.rmdir(dir) end)

  -- fn(paths, label, folder) for the plain and the tagged files
  local function each(fn)
    assert.equal(2, #variants)
    for _, v in ipairs(variants) do fn(v.paths, v.label, v.dir) end
  end

  -- Runs a script (written to a file of the spec's folder) with interpreter and arguments.
  local function run_script(interp, file, args, text)
    fe.write(dir .. "/" .. file, text)
    local a = {}
    for i, v in ipairs(args) do a[i] = q(v) end
    return run(interp .. " " .. q(dir .. "/" .. file) .. " " .. table.concat(a, " "))
  end

  local function tool_it(tool, pkg, name, fn)
    if have(tool) then it(name, fn) else pending(name .. " (needs " .. tool .. ": apt-get install -y " .. pkg .. ")") end
  end

  tool_it("file", "file", "file(1) names each type", function()
    each(function(paths)
      for _, name in ipairs(NAMES) do
        local out = sh("file -b " .. q(paths[name]))
        assert.truthy(out:match(KINDS[name].file), name .. ": " .. out)
      end
    end)
  end)

  if PIL_PY then
    it("PIL opens each image: format, 16 x 16, frames, pixel colours", function()
      each(function(_, _, folder)
        local ok, out = run_script(PIL_PY, "pil.py", { folder }, [==[
import sys
from PIL import Image
d = sys.argv[1]
for name, ext in [("png","png"),("jpg","jpg"),("webp","webp"),("webp_animated","webp"),("gif","gif")]:
    im = Image.open("%s/%s.%s" % (d, name, ext))
    im.load()
    frames = getattr(im, "n_frames", 1)
    px = im.convert("RGB").getpixel((0, 0))
    print(name, im.format, im.size[0], im.size[1], frames, px[0], px[1], px[2])
]==])
        assert.is_true(ok, out)
        local want_px = { png = { 8, 8, 160 }, jpg = { 220, 40, 40 }, webp = { 230, 90, 20 }, webp_animated = { 230, 90, 20 },
          gif = { 200, 30, 30 } }
        local seen = 0
        for line in out:gmatch("[^\n]+") do
          local name, fmt, w, h, frames, r, g, b = line:match("^(%S+) (%S+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$")
          assert.truthy(name, line)
          assert.equal(KINDS[name].pil, fmt)
          assert.equal("16x16", w .. "x" .. h)
          assert.equal(KINDS[name].frames, tonumber(frames), name)
          local want = want_px[name]
          for i, v in ipairs({ tonumber(r), tonumber(g), tonumber(b) }) do
            assert.is_true(math.abs(v - want[i]) <= 3, name .. " pixel: " .. line) -- JPEG rounds
          end
          seen = seen + 1
        end
        assert.equal(5, seen)
      end)
    end)
  else
    pending("PIL opens each image (needs python3 with PIL: apt-get install -y python3-pil)")
  end

  tool_it("gifsicle", "gifsicle", "gifsicle reads the GIF: 4 frames, looping", function()
    each(function(paths)
      local ok, out = run("gifsicle --info " .. q(paths.gif))
      assert.is_true(ok, out)
      assert.truthy(out:find("4 images", 1, true), out)
      assert.truthy(out:find("loop forever", 1, true), out)
      assert.truthy(out:find("delay 0.25s", 1, true), out)
    end)
  end)

  tool_it("identify", "imagemagick", "ImageMagick identifies every image and its frames", function()
    each(function(paths)
      local want = { png = "PNG 16x16", jpg = "JPEG 16x16", webp = "WEBP 16x16", webp_animated = "WEBP 16x16", gif = "GIF 16x16" }
      for name, w in pairs(want) do
        local ok, out = run("identify " .. q(paths[name]))
        assert.is_true(ok, out)
        local n = 0
        for line in out:gmatch("[^\n]+") do
          assert.truthy(line:find(w, 1, true), line)
          n = n + 1
        end
        assert.equal(KINDS[name].frames, n, name .. ": " .. out)
      end
    end)
  end)

  tool_it("ffprobe", "ffmpeg", "ffprobe and ffmpeg read the MP4 (H.264, 4 frames) and the GIF", function()
    each(function(paths)
      local ok, out = run("ffprobe -v error -count_frames -select_streams v:0 -show_entries " ..
        "stream=codec_name,profile,width,height,pix_fmt,nb_read_frames -show_entries format=duration -of default=nw=1 " .. q(paths.mp4))
      assert.is_true(ok, out)
      for _, w in ipairs({ "codec_name=h264", "profile=Constrained Baseline", "width=32", "height=32", "pix_fmt=yuv420p",
        "nb_read_frames=4", "duration=1.000000" }) do
        assert.truthy(out:find(w, 1, true), w .. " not in: " .. out)
      end
      -- every frame decodes without a word from the decoder
      ok, out = run("ffmpeg -nostdin -v error -i " .. q(paths.mp4) .. " -f null -")
      assert.is_true(ok, out)
      assert.equal("", out)
      ok, out = run("ffprobe -v error -count_frames -show_entries stream=codec_name,nb_read_frames -of default=nw=1 " .. q(paths.gif))
      assert.is_true(ok, out)
      assert.truthy(out:find("codec_name=gif", 1, true) and out:find("nb_read_frames=4", 1, true), out)
    end)
  end)

  tool_it("pngcheck", "pngcheck", "pngcheck finds no error in the PNG", function()
    each(function(paths)
      local ok, out = run("pngcheck -v " .. q(paths.png))
      assert.is_true(ok, out)
      assert.truthy(out:find("No errors detected", 1, true), out)
    end)
  end)

  tool_it("djpeg", "libjpeg-turbo-progs", "libjpeg decodes the JPEG to 16 x 16 colour pixels", function()
    each(function(paths)
      local ok, out = run("djpeg -pnm " .. q(paths.jpg) .. " | head -c 15")
      assert.is_true(ok, out)
      assert.truthy(out:match("^P6\n16 16\n255\n"), out)
    end)
  end)

  tool_it("dwebp", "webp", "libwebp decodes the WebP (lossless) and webpmux reads the animation", function()
    each(function(paths)
      local ok, out = run("dwebp " .. q(paths.webp) .. " -o /dev/null")
      assert.is_true(ok, out)
      assert.truthy(out:find("Format: lossless", 1, true), out)
      if have("webpmux") then
        ok, out = run("webpmux -info " .. q(paths.webp_animated))
        assert.is_true(ok, out)
        assert.truthy(out:find("Number of frames: 4", 1, true), out)
      end
    end)
  end)

  if PY then
    it("the glTF files hold a valid glTF 2.0 triangle (python3 struct check)", function()
      each(function(paths)
        local ok, out = run_script(PY, "gltf.py", { paths.glb, paths.gltf }, [==[
import base64, json, struct, sys
glb = open(sys.argv[1], "rb").read()
magic, version, length = struct.unpack_from("<4sII", glb, 0)
assert magic == b"glTF" and version == 2 and length == len(glb), "header"
jlen, jtype = struct.unpack_from("<I4s", glb, 12)
assert jtype == b"JSON" and jlen % 4 == 0, "JSON chunk"
doc = json.loads(glb[20:20 + jlen])
blen, btype = struct.unpack_from("<I4s", glb, 20 + jlen)
assert btype == b"BIN\0" and blen % 4 == 0 and 28 + jlen + blen == len(glb), "BIN chunk"
binary = glb[28 + jlen:28 + jlen + blen]
def check(doc, buf):
    assert doc["asset"]["version"] == "2.0"
    prim = doc["meshes"][doc["nodes"][doc["scenes"][doc["scene"]]["nodes"][0]]["mesh"]]["primitives"][0]
    acc = doc["accessors"][prim["attributes"]["POSITION"]]
    assert acc["componentType"] == 5126 and acc["type"] == "VEC3" and acc["count"] == 3
    view = doc["bufferViews"][acc["bufferView"]]
    assert view["byteLength"] <= doc["buffers"][view["buffer"]]["byteLength"] <= len(buf)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    v = [struct.unpack_from("<3f", buf, start + 12 * i) for i in range(3)]
    assert [min(p[i] for p in v) for i in range(3)] == acc["min"], "min"
    assert [max(p[i] for p in v) for i in range(3)] == acc["max"], "max"
    print("triangle", v)
check(doc, binary)
g = json.load(open(sys.argv[2]))
uri = g["buffers"][0]["uri"]
check(g, base64.b64decode(uri.split(",", 1)[1]))
]==])
        assert.is_true(ok, out)
        local n = 0
        for _ in out:gmatch("triangle %[%(0%.0, 0%.0, 0%.0%), %(1%.0, 0%.0, 0%.0%), %(0%.0, 1%.0, 0%.0%)%]") do n = n + 1 end
        assert.equal(2, n, out)
      end)
    end)
  else
    pending("the glTF structure check (needs python3)")
  end

  -- The Khronos glTF validator (npm gltf-validator) when node can load it (NODE_PATH).
  local has_validator = have("node") and run("node -e \"require.resolve('gltf-validator')\"")
  if has_validator then
    it("the Khronos glTF validator finds no error, warning or info", function()
      each(function(paths)
        local ok, out = run_script("node", "validate.js", { paths.glb, paths.gltf }, [==[
const v = require('gltf-validator'), fs = require('fs');
(async () => { for (const f of process.argv.slice(2)) {
  const r = await v.validateBytes(new Uint8Array(fs.readFileSync(f)));
  console.log('issues', r.issues.numErrors, r.issues.numWarnings, r.issues.numInfos, 'triangles', r.info.totalTriangleCount);
}})().catch(e => { console.log(String(e)); process.exit(1); });
]==])
        assert.is_true(ok, out)
        local n = 0
        for _ in out:gmatch("issues 0 0 0 triangles 1") do n = n + 1 end
        assert.equal(2, n, out)
      end)
    end)
  else
    pending("the Khronos glTF validator (needs node and npm's gltf-validator on NODE_PATH)")
  end
end)

-- The fake's file records of a task (GET /_fake/tasks/{id}/files): key -> record.
local function records(env, id)
  return require("cjson").decode(sh("curl -s " .. q(env.url .. "/_fake/tasks/" .. id .. "/files")))
end

describe("the nginx fake serves real media files to the client", function()
  local env, dir
  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)
  before_each(function() dir = fe.tmpdir() end)
  after_each(function() fe.rmdir(dir) end)

  local function check(id, key, f, name)
    local kind = KINDS[name]
    local data = fe.read(f.path)
    local tag = "taskapi-fake " .. id .. " " .. key
    assert.equal(media.bytes(name, tag), data, f.path .. " is not the " .. name .. " file of " .. tag)
    assert.equal(#data, f.bytes)
    assert.equal(kind.ct, f.content_type, f.path)
    -- the fake's own record says the same, and its bytes are those (the helper specs use)
    local rec = records(env, id)[key]
    assert.equal(name, rec.media)
    assert.equal(tag, rec.tag)
    assert.equal(#data, rec.size)
    assert.equal(data, model.record_bytes(rec))
    assert.equal(data:sub(11, 30), model.record_bytes(rec, 10, 20))
    if have("file") then
      local out = sh("file -b " .. q(f.path))
      assert.truthy(out:match(kind.file), f.path .. ": " .. out)
    end
  end

  it("Tripo: a GLB model, a WebP rendering, PNG images and views", function()
    local c = env:client(TRIPO)
    local id = env:add { provider = "tripo", queue = 0, run = 0, multiview = true,
      outputs = { "model", "pbr_model", "rendered_image", "generated_image" } }
    local task = assert(c:status(id))
    local files = assert(c:download(task, { dir = dir }))
    assert.equal(8, #files)
    local want = { model = "glb", pbr_model = "glb", rendered_image = "webp", generated_image = "png" }
    for _, f in ipairs(files) do
      local view = f.name:match("^(%a+)_view$")
      if view then
        check(id, "generate_multiview_image." .. view, f, "png")
      else
        check(id, f.name, f, want[f.name])
      end
    end
  end)

  it("Tripo: an output named for another type gets that type (gltf, obj, jpg); unknown ones the filler", function()
    local c = env:client(TRIPO)
    local id = env:add { provider = "tripo", queue = 0, run = 0,
      outputs = { model = "gltf", base_model = "obj", generated_image = "jpg", pbr_model = "fbx" } }
    local task = assert(c:status(id))
    local files = assert(c:download(task, { dir = dir }))
    assert.equal(4, #files)
    for _, f in ipairs(files) do
      if f.name == "pbr_model" then
        assert.equal(2048, f.bytes)
        assert.equal(fe.expected_bytes(id, "pbr_model", 2048), fe.read(f.path))
        assert.is_nil(records(env, id).pbr_model.media)
      else
        check(id, f.name, f, ({ model = "gltf", base_model = "obj", generated_image = "jpg" })[f.name])
      end
    end
  end)

  it("SellerPic: images as PNG, JPEG and WebP; a video as MP4, GIF and animated WebP", function()
    local c = env:client("sellerpic")
    local img = env:add { provider = "sellerpic", queue = 0, run = 0, results = 2 }
    local vid = env:add { provider = "sellerpic", type = "imageToVideo", queue = 0, run = 0 }
    for _, case in ipairs({ { img, "png", "png" }, { img, "jpg", "jpg" }, { img, "webp", "webp" },
      { vid, "mp4", "mp4" }, { vid, "gif", "gif" }, { vid, "webp", "webp_animated" } }) do
      local id, fmt, name = case[1], case[2], case[3]
      local task = assert(c:status(id))
      local d = fe.tmpdir()
      local files = assert(c:download(task, { dir = d, format = fmt }))
      assert.equal(id == img and 2 or 1, #files)
      for _, f in ipairs(files) do
        assert.truthy(f.path:match("%." .. fmt .. "$"), f.path)
        check(id, f.name .. "." .. fmt, f, name)
      end
      fe.rmdir(d)
    end
  end)

  it("a task with a file_size keeps the deterministic filler of that size", function()
    local c = env:client(TRIPO)
    local id = env:add { provider = "tripo", queue = 0, run = 0, file_size = 5000, outputs = { "model" } }
    local files = assert(c:download(assert(c:status(id)), { dir = dir }))
    assert.equal(5000, files[1].bytes)
    assert.equal(fe.expected_bytes(id, "model", 5000), fe.read(files[1].path))
    local rec = records(env, id).model
    assert.is_nil(rec.media)
    assert.equal("no such task", records(env, "no-such-task").error)
    assert.equal(fe.read(files[1].path), model.record_bytes(rec))
    assert.equal("model/gltf-binary", files[1].content_type)
  end)

  it("answers Range and HEAD on a media file", function()
    local id = env:add { provider = "tripo", queue = 0, run = 0, outputs = { "model" } }
    local task = assert(env:client(TRIPO):status(id))
    local url = task.outputs[1].url
    local glb = model.record_bytes(records(env, id).model)
    assert.equal(media.bytes("glb", "taskapi-fake " .. id .. " model"), glb)
    local out = sh("curl -s -i -r 10-29 " .. q(url))
    assert.truthy(out:match("^HTTP/1%.1 206"), out)
    assert.truthy(out:find("Content-Range: bytes 10-29/" .. #glb, 1, true), out)
    assert.equal(glb:sub(11, 30), out:match("\r\n\r\n(.*)$"))
    out = sh("curl -s -I " .. q(url))
    assert.truthy(out:find("Content-Length: " .. #glb, 1, true), out)
    assert.truthy(out:find("Content-Type: model/gltf-binary", 1, true), out)
  end)
end)

describe("the in-process fake serves the same media files", function()
  it("to a client on its transport, with their content types", function()
    local taskapi = require "taskapi"
    local dir = fe.tmpdir()
    local f = require("taskapi.fake").new { files_dir = dir .. "/files" }
    local id = f:add_task { provider = "tripo", queue = 0, run = 0 }
    local c = assert(taskapi.new { provider = "tripo", api_key = fe.KEY, base_url = f:base_url("tripo"),
      transport = f:transport(), min_interval = 0 })
    os.execute("mkdir " .. q(dir .. "/out"))
    local files = assert(c:download(assert(c:status(id)), { dir = dir .. "/out" }))
    assert.equal(2, #files)
    local want = { model = "glb", rendered_image = "webp" }
    for _, file in ipairs(files) do
      local name = want[file.name]
      assert.equal(media.bytes(name, "taskapi-fake " .. id .. " " .. file.name), fe.read(file.path))
      assert.equal(KINDS[name].ct, file.content_type)
      assert.equal(name, f.model:file_info(id, file.name).media)
    end
    fe.rmdir(dir)
  end)
end)
