-- The Tripo definitions as data: V3 (`tripo`) and V2 (`tripo-v2`) payloads into the one task
-- shape (states, outputs with stable names, values, times, credits), and the checks a V3
-- create makes before any request. Payloads are shaped as Tripo's SDKs type them; the
-- behaviour over real HTTP is in the integration specs.
local taskapi = require "taskapi"
local provider = require "taskapi.api.provider"

local V3 = assert(provider.load("tripo"))
local V2 = assert(provider.load("tripo-v2"))
local null = taskapi.null

local function task(def, data) return assert(provider.task(def, data, data.task_id or "t-1", nil, null)) end

local function names(t)
  local out = {}
  for i, o in ipairs(t.outputs) do out[i] = o.name .. "=" .. o.kind end
  return table.concat(out, " ")
end

describe("provider names", function()
  it("tripo is V3, tripo-v2 is V2, any case; an unknown name lists the known ones", function()
    assert.equal("https://openapi.tripo3d.ai/v3", V3.base_url)
    assert.equal("https://api.tripo3d.ai/v2/openapi", V2.base_url)
    assert.equal(V2, provider.load("Tripo-V2"))
    assert.equal(provider.load("sellerpic"), provider.load("SellerPic"))
    local d, err = provider.load("tripo3")
    assert.is_nil(d)
    assert.equal("invalid_argument", err.kind)
    assert.matches("known: tripo, tripo%-v2, sellerpic", err.message)
  end)

  it("region = 'cn' picks Tripo's China host for each version; base_url still wins", function()
    local c = assert(taskapi.new { provider = "tripo", api_key = "k", region = "cn" })
    assert.equal("https://openapi.tripo3d.com/v3", c.base_url)
    local c2 = assert(taskapi.new { provider = "tripo-v2", api_key = "k", region = "CN" })
    assert.equal("https://api.tripo3d.com/v2/openapi", c2.base_url)
    local c3 = assert(taskapi.new { provider = "tripo", api_key = "k", region = "cn", base_url = "http://127.0.0.1:1/v3" })
    assert.equal("http://127.0.0.1:1/v3", c3.base_url)
    local _, err = taskapi.new { provider = "tripo", api_key = "k", region = "mars" }
    assert.equal("invalid_argument", err.kind)
    assert.matches("'region' must be one of cn, global, got 'mars'", err.message)
    local _, err2 = taskapi.new { provider = "sellerpic", api_key = "k", region = "cn" }
    assert.matches("sellerpic has no regions", err2.message)
  end)
end)

describe("Tripo V3 task payloads", function()
  it("a finished text_to_model task: outputs by stable name, values, times, credits", function()
    local t = task(V3, {
      task_id = "7f3a", type = "text_to_model", status = "success", progress = 100,
      credits_consumed = 12.5, created_at = "2026-12-03T08:45:40Z", completed_at = "2026-12-03T08:46:10.250Z",
      output = {
        model_url = "https://cdn.example/m.glb?sig=1", rendered_image_url = "https://cdn.example/r.webp",
        generated_image_url = "https://cdn.example/g.png", rendered_video_url = "https://cdn.example/v.mp4",
        riggable = true, rig_type = "biped", face_count = 5000, thumbnail = null,
      },
    })
    assert.equal("succeeded", t.state)
    assert.is_true(t.done and t.ok)
    assert.equal("text_to_model", t.type)
    assert.equal("model=model generated_image=image rendered_image=image rendered_video=video", names(t))
    assert.equal("https://cdn.example/m.glb?sig=1", t.outputs[1].url)
    assert.same({ riggable = true, rig_type = "biped", face_count = 5000 }, t.values)
    assert.equal(1796287540, t.created_at)
    assert.equal(1796287570.25, t.completed_at)
    assert.equal(12.5, t.credits)
  end)

  it("model_urls: the first is `model`, the others model_2, model_3 (no duplicate of model_url)", function()
    local t = task(V3, { status = "success", output = {
      model_url = "https://c/a.glb", model_urls = { "https://c/a.glb", "https://c/b.fbx", "https://c/c.obj" } } })
    assert.equal("model=model model_2=model model_3=model", names(t))
    local t2 = task(V3, { status = "success", output = { model_urls = { "https://c/x.glb", "https://c/y.glb" } } })
    assert.equal("model=model model_2=model", names(t2))
    assert.equal("https://c/x.glb", t2.outputs[1].url)
  end)

  it("multiview views, flat (V3) or nested (V2), come as front_view .. right_view after the images", function()
    local flat = task(V3, { status = "success", output = {
      right_view_url = "https://c/r.png", front_view_url = "https://c/f.png", left_view_url = "https://c/l.png",
      back_view_url = "https://c/b.png", multiview_basecolor_url = "https://c/bc.png" } })
    assert.equal("multiview_basecolor=image front_view=image left_view=image back_view=image right_view=image", names(flat))
    local nested = task(V2, { status = "success", output = { generate_multiview_image = {
      front_view_url = "https://c/f.png", left_view_url = "https://c/l.png", back_view_url = "https://c/b.png",
      right_view_url = "https://c/r.png" } } })
    assert.equal("front_view=image left_view=image back_view=image right_view=image", names(nested))
  end)

  it("undocumented URL fields come last in name order, named without _url", function()
    local t = task(V3, { status = "success", output = { zeta_url = "https://c/z.bin", model_url = "https://c/m.glb",
      alpha = "http://c/a.png", note = "not a url" } })
    assert.equal("model=model alpha=image zeta=image", names(t))
    assert.same({ note = "not a url" }, t.values)
  end)

  it("the five-value list: failed with 2008 is banned, with 2018 expired, others failed", function()
    local banned = task(V3, { status = "failed", error_code = 2008, error_message = "content policy" })
    assert.equal("banned", banned.state)
    assert.same({ code = 2008, message = "content policy" }, banned.error)
    assert.equal("expired", task(V3, { status = "failed", error_code = 2018 }).state)
    local failed = task(V3, { status = "failed", error_code = 1001 })
    assert.equal("failed", failed.state)
    assert.equal("task failed with error code 1001", failed.error.message)
    assert.is_true(failed.done)
    assert.is_false(failed.ok)
  end)

  it("the eight-value list too, and an unknown status is finalized 'unknown'", function()
    for raw, state in pairs { queued = "queued", running = "running", success = "succeeded", failed = "failed",
        banned = "banned", expired = "expired", cancelled = "cancelled", unknown = "unknown", paused = "unknown" } do
      local t = task(V3, { status = raw })
      assert.equal(state, t.state, raw)
      assert.equal(state ~= "queued" and state ~= "running", t.done, raw)
    end
  end)

  it("queue_position and eta when the fields are there, nothing when they are gone or -1", function()
    local q = task(V3, { status = "queued", queuing_num = 3, running_left_time = -1 })
    assert.equal(3, q.queue_position)
    assert.is_nil(q.eta)
    local r = task(V3, { status = "running", progress = 40, running_left_time = 12 })
    assert.equal(12, r.eta)
    assert.equal(40, r.progress)
    local bare = task(V3, { status = "running", progress = 40 })
    assert.is_nil(bare.eta)
    assert.is_nil(bare.queue_position)
    assert.is_nil(bare.completed_at)
  end)

  it("times: ISO strings with offsets and fractions, V2's Unix create_time; junk is nil", function()
    assert.equal(0, provider.iso_time("1970-01-01T00:00:00Z"))
    assert.equal(951782400, provider.iso_time("2000-02-29T00:00:00Z"))
    assert.equal(1796287540 - 3600, provider.iso_time("2026-12-03T08:45:40+01:00"))
    assert.equal(1796287540 + 5400, provider.iso_time("2026-12-03T08:45:40-0130"))
    assert.equal(1796287540.5, provider.iso_time("2026-12-03 08:45:40.5"))
    for _, bad in ipairs { "2026-13-03T08:45:40Z", "yesterday", "2026-12-03", "2026-12-03T08:45:40+1", "" } do
      assert.is_nil(provider.iso_time(bad), bad)
    end
    local v2 = task(V2, { status = "success", create_time = 1796287540, consumed_credit = 20, output = { model = "https://c/m.glb" } })
    assert.equal(1796287540, v2.created_at)
    assert.equal(20, v2.credits)
    assert.equal("tripo-v2", v2.provider)
    assert.equal("model=model", names(v2))
    assert.equal("12.5", tostring(task(V3, { status = "success", credits_consumed = "12.50" }).credits))
  end)

  it("a batch answer: tasks as a map or an array, missed ids", function()
    local by, missed = V3.batch.read({ tasks = { a = { task_id = "a", status = "queued" }, b = { status = "running" } },
      missed = { "c" } }, null)
    assert.equal("queued", by.a.status)
    assert.equal("running", by.b.status)
    assert.same({ "c" }, missed)
    local by2 = V2.batch.read({ tasks = { { task_id = "x", status = "success" } } }, null)
    assert.equal("success", by2.x.status)
  end)
end)

describe("Tripo V3 create, checked before any request", function()
  local sent
  local spy = { request = function(_, req) sent[#sent + 1] = req; return nil, "no network in this spec" end }
  local function client()
    sent = {}
    return assert(taskapi.new { provider = "tripo", api_key = "k", transport = spy, retries = 0 })
  end

  it("a to-model type without model_version names the field and an example value", function()
    local c = client()
    for _, t in ipairs { "text_to_model", "image-to-model", "generation/multiview-to-model" } do
      local id, err = c:create { type = t, prompt = "a cat" }
      assert.is_nil(id)
      assert.equal("invalid_argument", err.kind)
      assert.matches("needs 'model_version' %(or 'model'%), for example model_version = \"v3%.1%-20260211\"", err.message)
    end
    assert.equal(0, #sent)
  end)

  it("an unknown type is refused with the list of known ones", function()
    local c = client()
    local id, err = c:create { type = "text_to_modle", prompt = "a cat" }
    assert.is_nil(id)
    assert.matches("unknown tripo task type 'text_to_modle' %(known: animate_prerigcheck, .*text_to_model", err.message)
    assert.equal(0, #sent)
  end)

  it("V2 names, V3 names and group/name reach one endpoint, the body without type", function()
    local c = client()
    for _, t in ipairs { "text_to_model", "text-to-model", "generation/text-to-model" } do
      c:create { type = t, model_version = "v3.1-20260211", prompt = "a cat" }
    end
    c:create { type = "animate_prerigcheck", original_model_task_id = "x" }
    c:create { type = "rig-check", input = "x" }
    c:create { type = "mesh_segmentation", input = "x" }
    assert.equal(6, #sent)
    for i = 1, 3 do
      assert.equal("POST", sent[i].method)
      assert.equal("https://openapi.tripo3d.ai/v3/generation/text-to-model", sent[i].url)
      assert.is_nil(sent[i].body:find('"type"', 1, true))
      assert.truthy(sent[i].body:find('"model_version":"v3.1-20260211"', 1, true))
    end
    assert.equal("https://openapi.tripo3d.ai/v3/animations/rig-check", sent[4].url)
    assert.equal("https://openapi.tripo3d.ai/v3/animations/rig-check", sent[5].url)
    assert.equal("https://openapi.tripo3d.ai/v3/mesh/segment", sent[6].url)
  end)

  it("V2 posts every type to /task with type in the body", function()
    sent = {}
    local c = assert(taskapi.new { provider = "tripo-v2", api_key = "k", transport = spy, retries = 0 })
    c:create { type = "text_to_model", prompt = "a cat" }
    assert.equal("https://api.tripo3d.ai/v2/openapi/task", sent[1].url)
    assert.truthy(sent[1].body:find('"type":"text_to_model"', 1, true))
  end)

  it("usage: limit and offset checked, then one GET with both", function()
    local c = client()
    for _, o in ipairs { { limit = 0 }, { limit = 201 }, { limit = 1.5 }, { offset = -1 }, { page = 1 } } do
      local rows, err = c:usage(o)
      assert.is_nil(rows)
      assert.equal("invalid_argument", err.kind)
    end
    assert.equal(0, #sent)
    c:usage { limit = 200, offset = 400 }
    assert.equal("https://openapi.tripo3d.ai/v3/account/usage?limit=200&offset=400", sent[1].url)
    local sp = assert(taskapi.new { provider = "sellerpic", api_key = "k", transport = spy })
    local _, err = sp:usage()
    assert.matches("sellerpic: this provider has no usage listing", err.message)
  end)
end)
