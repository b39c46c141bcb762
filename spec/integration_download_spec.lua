-- Integration: client:download through the real C module over real HTTP against the nginx
-- fake, for Tripo3D and SellerPic: file names and contents, the output filter and formats,
-- resumption and restarts after drops, expired links renewed once, every failure leaving no
-- file behind, nothing written outside the folder, and the API key never sent to a file host.
local fe = require "support.fake_env"

local SIZE = 100000

describe("integration: download", function()
  local env, dir

  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)
  before_each(function() dir = fe.tmpdir() end)
  after_each(function() fe.rmdir(dir) end)

  -- The fake's file key of an output: Tripo the output name (multiview views under
  -- generate_multiview_image.<view>), SellerPic "<result id>.<format>".
  local function file_key(p, name, fmt)
    if p == "sellerpic" then return name .. "." .. (fmt or "png") end
    local view = name:match("^(%a+)_view$")
    if view then return "generate_multiview_image." .. view end
    return name
  end

  local function no_auth_to_file_host(log)
    local files = fe.file_requests(log)
    assert.is_true(#files > 0, "no file host request in the log")
    for _, e in ipairs(files) do
      assert.is_false(e.authorization, "the file host got an Authorization header: " .. e.path)
      assert.is_nil(e.key)
    end
    return files
  end

  local function check_file(p, id, f, size, fmt)
    local data = fe.read(f.path)
    assert.is_string(data, "no file at " .. f.path)
    assert.equal(size, #data)
    assert.equal(size, f.bytes)
    local want = fe.expected_bytes(id, file_key(p, f.name, fmt), size)
    assert.is_true(data == want, "content of " .. f.path .. " differs from the served file")
    assert.equal(fe.sha256_string(want), fe.sha256(f.path))
    assert.is_nil(data:find(fe.KEY, 1, true), "the API key is in " .. f.path)
  end

  for _, p in ipairs(fe.PROVIDERS) do
    describe(p, function()
      local c
      setup(function() c = env:client(p) end)

      local add = env:adder(p, { file_size = SIZE })

      -- A finished task read through the client (its links are fresh).
      local function finished(spec)
        local id = add(spec)
        local task = assert(c:status(id))
        assert.is_true(task.done)
        return task, id
      end

      local function names_in(d) return fe.ls(d or dir) end

      it("saves every output as <task id>_<output name>.<ext> with the served bytes", function()
        local task, id = finished(fe.is_tripo(p) and { multiview = true } or { results = 2 })
        local mark = env:mark()
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(err)
        assert.equal(#task.outputs, #files)
        local want = {}
        for i, o in ipairs(task.outputs) do
          local f = files[i]
          assert.equal(o.name, f.name)
          local ext = p == "sellerpic" and "png" or (o.url:match("%.(%w+)$"))
          local path = dir .. "/" .. id .. "_" .. o.name .. "." .. ext
          assert.equal(path, f.path)
          want[#want + 1] = id .. "_" .. o.name .. "." .. ext
          check_file(p, id, f, SIZE)
          assert.is_string(f.content_type)
        end
        if fe.is_tripo(p) then
          assert.equal(6, #files) -- model, rendered_image and four views
          assert.equal("model/gltf-binary", files[1].content_type)
          assert.equal(dir .. "/" .. id .. "_front_view.png", files[3].path)
        else
          assert.equal("image/png", files[1].content_type)
        end
        table.sort(want)
        assert.same(want, names_in())           -- no .part file left, nothing else
        local log = env:log(mark)
        assert.equal(#files, #no_auth_to_file_host(log))
        -- every API request carried the key, every file request none
        for _, e in ipairs(log) do
          assert.equal(e.path:sub(1, 7) ~= "/files/", e.authorization)
        end
        fe.check_no_key_in(dir)
      end)

      it("downloads by task id (one status read first)", function()
        local id = add {}
        local mark = env:mark()
        local files, err = c:download(id, { dir = dir })
        assert.is_nil(err)
        assert.is_true(#files >= 1)
        for _, f in ipairs(files) do check_file(p, id, f, SIZE) end
        assert.equal(1, #fe.status_requests(env:log(mark), id))
      end)

      it("saves only the outputs asked for; an unknown name fails before any download", function()
        local task, id = finished(fe.is_tripo(p) and {} or { results = 3 })
        local name = task.outputs[1].name
        local files, err = c:download(task, { dir = dir, outputs = { name } })
        assert.is_nil(err)
        assert.equal(1, #files)
        assert.equal(name, files[1].name)
        check_file(p, id, files[1], SIZE)
        assert.equal(1, #names_in())
        local mark = env:mark()
        local r
        r, err = c:download(task, { dir = dir, outputs = { name, "no_such_output" } })
        assert.is_nil(r)
        fe.check_err(err, "invalid_argument")
        assert.truthy(err.message:find("no_such_output", 1, true))
        assert.same({}, env:log(mark))
        assert.equal(1, #names_in())
        -- a single name works as well as an array
        fe.rmdir(dir); dir = fe.tmpdir()
        files = assert(c:download(task, { dir = dir, outputs = name }))
        assert.equal(1, #files)
      end)

      it("resumes a dropped connection with Range and gets the content right", function()
        local task, id = finished { drop_download = 0.5, file_size = 300000, outputs = fe.is_tripo(p) and { "model" } or nil }
        local mark = env:mark()
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(err)
        assert.equal(1, #files)
        check_file(p, id, files[1], 300000)
        local gets = no_auth_to_file_host(env:log(mark))
        assert.equal(2, #gets)
        assert.is_nil(gets[1].headers.range)
        local from = tonumber((gets[2].headers.range or ""):match("^bytes=(%d+)%-$"))
        assert.is_number(from, "the second request has no Range header")
        assert.is_true(from > 0 and from < 300000, "resumed from " .. tostring(from))
        assert.same({ files[1].path:match("[^/]+$") }, names_in())
      end)

      it("restarts cleanly when the host ignores Range after a drop", function()
        local task, id = finished { drop_download = 0.5, ignore_range = true, file_size = 300000,
          outputs = fe.is_tripo(p) and { "model" } or nil }
        local mark = env:mark()
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(err)
        check_file(p, id, files[1], 300000)
        local gets = fe.file_requests(env:log(mark))
        assert.is_true(#gets >= 2)
        assert.same({ files[1].path:match("[^/]+$") }, names_in())
      end)

      it("resumes after a stalled transfer (stall_time)", function()
        local cs = env:client(p, { stall_time = 1 })
        local id = add { stall = 3, stall_count = 1, file_size = 200000, outputs = fe.is_tripo(p) and { "model" } or nil }
        local task = assert(cs:status(id))
        local files, err = cs:download(task, { dir = dir })
        assert.is_nil(err)
        check_file(p, id, files[1], 200000)
        assert.equal(1, #names_in())
      end)

      it("renews an expired link once and succeeds", function()
        -- Every link the fake issues counts: the status read burns one (Tripo: the model's;
        -- SellerPic: the fileUrl of the status answer), so SellerPic needs two for its first
        -- download link to be expired too.
        local task, id = finished { expired_links = fe.is_tripo(p) and 1 or 2,
          outputs = fe.is_tripo(p) and { "model" } or nil }
        local mark = env:mark()
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(err)
        assert.equal(1, #files)
        check_file(p, id, files[1], SIZE)
        local log = env:log(mark)
        local gets = no_auth_to_file_host(log)
        assert.equal(2, #gets)                    -- one 403, one good
        if fe.is_tripo(p) then
          assert.equal(1, #fe.status_requests(log, id))            -- the task read again
        else
          assert.equal(2, #fe.matching(log, "/v1/api/download"))  -- a new download link
        end
        assert.same({ files[1].path:match("[^/]+$") }, names_in())
      end)

      it("fails with 'download' when the renewed link is refused too, leaving no file", function()
        local task = finished { expired_links = 5, outputs = fe.is_tripo(p) and { "model" } or nil }
        local mark = env:mark()
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(files)
        fe.check_err(err, "download")
        assert.equal(403, err.status)
        assert.equal(task.id, err.task_id)
        assert.equal(2, #fe.file_requests(env:log(mark)))
        assert.same({}, names_in())
      end)

      it("fails on a Content-Length that lies, leaving neither the file nor its part", function()
        local task = finished { lie_length = true, outputs = fe.is_tripo(p) and { "model" } or nil }
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(files)
        fe.check_err(err, "download")
        assert.same({}, names_in())
      end)

      it("aborts a file larger than max_bytes, leaving nothing", function()
        local task = finished { file_size = 200000 }
        local files, err = c:download(task, { dir = dir, max_bytes = 50000 })
        assert.is_nil(files)
        fe.check_err(err, "download")
        assert.same({}, names_in())
      end)

      it("never writes where a server-supplied file name points", function()
        local sub = dir .. "/a/b"
        os.execute("mkdir -p " .. fe.q(sub))
        local task, id = finished { filename = "../../evil.sh", outputs = fe.is_tripo(p) and { "model" } or nil }
        local files, err = c:download(task, { dir = sub })
        assert.is_nil(err)
        assert.equal(1, #files)
        check_file(p, id, files[1], SIZE)
        assert.equal(sub, files[1].path:match("^(.*)/[^/]+$"))
        assert.same({ "a/b/" .. files[1].path:match("[^/]+$") }, fe.find(dir))
        assert.is_false(fe.exists(dir .. "/evil.sh"))
        assert.is_false(fe.exists("/tmp/evil.sh"))
      end)

      it("skips an existing file (reported skipped, left alone) unless overwrite = true", function()
        local task, id = finished { outputs = fe.is_tripo(p) and { "model" } or nil }
        local first = assert(c:download(task, { dir = dir }))
        local path = first[1].path
        fe.write(path, "precious")
        local mark = env:mark()
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(err)
        assert.equal(1, #files)
        assert.is_true(files[1].skipped)
        assert.equal(path, files[1].path)
        assert.equal(#"precious", files[1].bytes)
        assert.equal("precious", fe.read(path))
        assert.equal(0, #fe.file_requests(env:log(mark)))
        assert.equal(1, #names_in())
        files = assert(c:download(task, { dir = dir, overwrite = true }))
        check_file(p, id, files[1], SIZE)
        assert.equal(1, #names_in())
      end)

      it("makes a missing folder and its parents (mkdir -p), then saves into it", function()
        local task = finished {}
        local d = fe.tmpdir()
        local files = assert(c:download(task, { dir = d .. "/a/b c/" }))
        assert.is_true(#files > 0)
        assert.equal(d .. "/a/b c/" .. task.id, files[1].path:sub(1, #d + 7 + #task.id))
        assert.is_true(fe.exists(files[1].path))
        fe.rmdir(d)
      end)

      it("fails with 'io' before any request when the folder is not a folder or cannot be made", function()
        local task = finished {}
        local file = dir .. "/plain"
        fe.write(file, "x")
        local mark = env:mark()
        for _, d in ipairs({ file, file .. "/sub", file .. "/sub/deeper" }) do
          local files, err = c:download(task, { dir = d })
          assert.is_nil(files)
          fe.check_err(err, "io")
        end
        assert.same({}, env:log(mark))
        assert.same({ "plain" }, names_in())
      end)

      it("fails with 'io' when the folder cannot be written (/proc), leaving nothing", function()
        local task = finished { outputs = fe.is_tripo(p) and { "model" } or nil }
        local files, err = c:download(task, { dir = "/proc" })
        assert.is_nil(files)
        fe.check_err(err, "io")
        assert.is_false(fe.exists("/proc/" .. task.id .. "_" .. task.outputs[1].name .. ".glb"))
      end)

      it("reports progress with growing byte counts and the output name", function()
        local task = finished { file_size = 400000 }
        local calls, last = {}, {}
        local files, err = c:download(task, { dir = dir, on_progress = function(done, total, name)
          calls[#calls + 1] = { done, total, name }
          assert.is_true(done >= (last[name] or 0), "progress went back")
          last[name] = done
        end })
        assert.is_nil(err)
        assert.is_true(#calls >= #files)
        local names = {}
        for _, o in ipairs(task.outputs) do names[o.name] = true end
        for _, cl in ipairs(calls) do assert.is_true(names[cl[3]], tostring(cl[3])) end
        for _, f in ipairs(files) do assert.equal(400000, last[f.name]) end
      end)

      it("refuses a task that is not finished, and reports a failed one as task_failed", function()
        local id = add { queue = 30 }
        local task = assert(c:status(id))
        assert.is_false(task.done)
        local mark = env:mark()
        local files, err = c:download(task, { dir = dir })
        assert.is_nil(files)
        fe.check_err(err, "invalid_argument")
        assert.truthy(err.message:find("not finished", 1, true))
        assert.same({}, env:log(mark))
        files, err = c:download(id, { dir = dir })   -- by id: read, then refused
        assert.is_nil(files)
        fe.check_err(err, "invalid_argument")
        local failed = finished { final = fe.is_tripo(p) and "failed" or "FAILED", error_code = 3003 }
        mark = env:mark()
        files, err = c:download(failed, { dir = dir })
        assert.is_nil(files)
        fe.check_err(err, "task_failed")
        assert.equal(3003, err.code)
        assert.equal(failed.id, err.task_id)
        assert.same({}, env:log(mark))
        assert.same({}, names_in())
      end)
    end)
  end

  describe("sellerpic formats", function()
    local c
    setup(function() c = env:client("sellerpic") end)

    it("asks the download-link call for the format and names the file after it", function()
      local id = env:add { provider = "sellerpic", queue = 0, run = 0, results = 2, file_size = 5000 }
      local task = assert(c:status(id))
      local mark = env:mark()
      local files, err = c:download(task, { dir = dir, format = "webp" })
      assert.is_nil(err)
      assert.equal(2, #files)
      for i, f in ipairs(files) do
        assert.equal(dir .. "/" .. id .. "_" .. task.outputs[i].name .. ".webp", f.path)
        assert.equal("image/webp", f.content_type)
        check_file("sellerpic", id, f, 5000, "webp")
      end
      local calls = fe.matching(env:log(mark), "/v1/api/download")
      assert.equal(2, #calls)
      for i, e in ipairs(calls) do
        assert.equal("webp", e.query.downloadFormat)
        assert.equal(task.outputs[i].name, e.query.id)
        assert.is_true(e.authorization)
      end
      -- png by default
      mark = env:mark()
      files = assert(c:download(task, { dir = dir, outputs = task.outputs[1].name }))
      assert.truthy(files[1].path:match("%.png$"))
      assert.equal("png", fe.matching(env:log(mark), "/v1/api/download")[1].query.downloadFormat)
    end)

    it("refuses an unknown format before any request", function()
      local id = env:add { provider = "sellerpic", queue = 0, run = 0 }
      local task = assert(c:status(id))
      local mark = env:mark()
      for _, fmt in ipairs({ "bmp", "PNG", 5 }) do
        local files, err = c:download(task, { dir = dir, format = fmt })
        assert.is_nil(files)
        fe.check_err(err, "invalid_argument")
        assert.truthy(err.message:find("format", 1, true))
      end
      assert.same({}, env:log(mark))
    end)

    it("tripo has no format option", function()
      local t = env:client("tripo")
      local id = env:add { provider = "tripo", queue = 0, run = 0 }
      local task = assert(t:status(id))
      local files, err = t:download(task, { dir = dir, format = "png" })
      assert.is_nil(files)
      fe.check_err(err, "invalid_argument")
    end)
  end)
end)
