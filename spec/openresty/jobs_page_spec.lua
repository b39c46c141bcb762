-- OpenResty: the jobs page of the example (GET /, examples/openresty/page.lua) in a real
-- browser. The example runs against the nginx fake with ten Tripo tasks in mixed states in two
-- jobs (queued; running with progress and an ETA; succeeded with image and model results;
-- failed with a hostile error message and a hostile task type); headless Chromium (Debian's
-- `chromium`) loads the page with JavaScript (its script redraws the page from GET /jobs) and
-- without (the server-rendered table), and the specs read the DOM it dumps: every task with
-- its state, the progress bars, a thumbnail that loaded (the script marks data-loaded="1" on
-- the img's load event), and the hostile strings as text with no element injected. Pending,
-- with the reason, where Chromium cannot start. TASKAPI_JOBS_PAGE_PNG=path keeps the
-- screenshot taken of the live page.
local fe = require "support.fake_env"
local example = require "openresty.example_app"
local cjson = require "cjson"

local CHROMIUM = os.getenv("CHROMIUM") or "chromium"
local FLAGS = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run " ..
  "--disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage " ..
  "--hide-scrollbars --mute-audio"

-- What a provider might send to break the page: markup in an error message and in a type.
local HOSTILE = [[<script>alert(1)</script><img src=x onerror="document.title='pwned'">]]
local HOSTILE_TYPE = [[<b id="injected-type">bold</b>]]
local BREAKOUT = [["quoted" & 'single' </td></tr></table><i id="injected-cell">x</i>]]

local function curl(args)
  local p = io.popen("curl -s -m 20 " .. args .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out
end

-- Runs Chromium on url with a new empty profile; returns stdout, or nil and why it failed.
local function chromium(args, url)
  local profile = fe.tmpdir()
  local errf = profile .. ".stderr"
  local cmd = string.format("timeout 90 %s %s --user-data-dir=%s %s %s 2>%s", CHROMIUM, FLAGS,
    fe.q(profile .. "/ud"), args, fe.q(url), fe.q(errf))
  local p = io.popen(cmd)
  local out = p:read("*a")
  local ok, _, code = p:close()
  local err = fe.exists(errf) and fe.read(errf) or ""
  os.remove(errf)
  fe.rmdir(profile)
  local last = err:match("([^\n]+)\n?$") or ""
  if not ok and out == "" then return nil, "exit " .. tostring(code) .. ": " .. last end
  return out, last
end

-- The DOM of url with scripts off. --dump-dom reads the DOM through JavaScript, so it dumps
-- nothing under --blink-settings=scriptEnabled=false; this asks through the DevTools protocol
-- instead (--remote-debugging-pipe: commands in on fd 3, answers out on fd 4, each a JSON
-- text ended by a NUL), whose DOM domain needs no script: open a tab, attach to it, turn
-- scripts off (the flag and Emulation.setScriptExecutionDisabled), navigate, wait for the
-- load event, read the document's outer HTML.
local function dom_without_js(url)
  local dir = fe.tmpdir()
  local fifo, outf, errf = dir .. "/in", dir .. "/out", dir .. "/err"
  assert(os.execute("mkfifo " .. fe.q(fifo)))
  local cmd = string.format("timeout 90 %s %s --user-data-dir=%s --blink-settings=scriptEnabled=false " ..
    "--remote-debugging-pipe about:blank 3<%s 4>%s 2>%s &", CHROMIUM, FLAGS, fe.q(dir .. "/ud"), fe.q(fifo),
    fe.q(outf), fe.q(errf))
  os.execute(cmd)
  local pipe = assert(io.open(fifo, "w")) -- opens once Chromium's shell opened the other end
  local n = 0
  local function send(method, params, session)
    n = n + 1
    pipe:write(cjson.encode { id = n, method = method, params = params or {}, sessionId = session }, "\0")
    pipe:flush()
    return n
  end
  -- every message Chromium wrote so far
  local function messages()
    local list = {}
    local text = fe.exists(outf) and fe.read(outf) or ""
    local at = 1
    while true do
      local z = text:find("\0", at, true)
      if not z then break end
      list[#list + 1] = cjson.decode(text:sub(at, z - 1))
      at = z + 1
    end
    return list
  end
  local function await(match, what)
    for _ = 1, 300 do
      for _, m in ipairs(messages()) do if match(m) then return m end end
      os.execute("sleep 0.1")
    end
    error("no " .. what .. " from Chromium: " .. (fe.exists(errf) and fe.read(errf):sub(-400) or ""))
  end
  local function call(method, params, session)
    local id = send(method, params, session)
    local m = await(function(x) return x.id == id end, method)
    assert(not m.error, method .. ": " .. cjson.encode(m.error or {}))
    return m.result
  end
  local ok, html = pcall(function()
    local target = call("Target.createTarget", { url = "about:blank" }).targetId
    local session = call("Target.attachToTarget", { targetId = target, flatten = true }).sessionId
    call("Emulation.setScriptExecutionDisabled", { value = true }, session)
    call("Page.enable", {}, session)
    call("Page.navigate", { url = url }, session)
    await(function(x) return x.method == "Page.loadEventFired" and x.sessionId == session end, "load event")
    local root = call("DOM.getDocument", { depth = -1 }, session).root
    return call("DOM.getOuterHTML", { nodeId = root.nodeId }, session).outerHTML
  end)
  pcall(send, "Browser.close")
  pipe:close()
  for _ = 1, 50 do -- Chromium ends on Browser.close or on the end of its input
    local p = io.popen("pgrep -f -- " .. fe.q("--user-data-dir=" .. dir .. "/ud"))
    local running = p:read("*l")
    p:close()
    if not running then break end
    os.execute("sleep 0.1")
  end
  fe.rmdir(dir)
  assert(ok, html)
  return html
end

-- Can Chromium start here? nil when it can, else the reason (for pending).
local function probe()
  local ok = os.execute("command -v " .. CHROMIUM .. " >/dev/null 2>&1")
  if ok ~= true and ok ~= 0 then return CHROMIUM .. " is not installed (apt-get install -y chromium)" end
  local dom, err = chromium("--dump-dom", "data:text/html,<p id=probe>ok</p>")
  if not dom or not dom:find('id="probe"', 1, true) then
    return CHROMIUM .. " cannot start or dumps no DOM: " .. tostring(err)
  end
  return nil
end

local function pat(s) return (s:gsub("%p", "%%%0")) end

-- The opening tag and the content of the row of task id (a <tr data-task="id">), or nil.
local function row(dom, id)
  local s, e = dom:find('<tr[^>]-data%-task="' .. pat(id) .. '"[^>]*>')
  if not s then return nil end
  local close = dom:find("</tr>", e, true)
  return dom:sub(s, e), dom:sub(e + 1, (close or #dom + 1) - 1)
end

local function attr(tag, name)
  return tag:match("%s" .. name:gsub("%-", "%%-") .. '="([^"]*)"')
end

-- Every element and attribute of html (the page's own script and style bodies left out) is
-- one the page makes: a provider's markup, if it got through, would add others. Returns the
-- first stranger, or nil.
local TAGS = {}
for t in ("html head meta title style body h1 h2 p div section table thead tbody tr th td span code " ..
  "progress a img script noscript"):gmatch("%S+") do TAGS[t] = true end
local ATTRS = {}
for a in ("lang charset name content http-equiv nonce id class data-job data-task data-state href src alt " ..
  "title width height max value download data-loaded data-js data-rendered"):gmatch("%S+") do ATTRS[a] = true end
local function stranger(html)
  html = html:gsub("(<script[^>]*>).-(</script>)", "%1%2"):gsub("(<style[^>]*>).-(</style>)", "%1%2")
  for tag, attrs in html:gmatch("<(%a[%w-]*)([^>]*)>") do
    if not TAGS[tag:lower()] then return "element <" .. tag .. ">" end
    -- attributes one after another: name, or name="value" (values have no raw quote)
    local rest = attrs:gsub("/$", "")
    while true do
      rest = rest:gsub("^%s+", "")
      if rest == "" then break end
      local name, after = rest:match('^([%w-]+)="[^"]*"(.*)$')
      if not name then name, after = rest:match("^([%w-]+)(.*)$") end
      if not name then return "unparsed attributes in <" .. tag .. attrs .. ">" end
      if not ATTRS[name:lower()] then return "attribute " .. name .. " in <" .. tag .. ">" end
      rest = after
    end
  end
  return nil
end

local function count(s, pattern)
  local n = 0
  for _ in s:gmatch(pattern) do n = n + 1 end
  return n
end

-- Without a browser: the fake's error_message option reaches task.error through the real
-- client, and page.render escapes every string of a view (a provider's, or one a bug let
-- through) and drops file links that are not the example's own /files/ URLs.
describe("OpenResty example: the jobs page's data #openresty", function()
  local env
  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)

  it("a failed task's scripted error_message is the task's error message (Tripo V3 and SellerPic)", function()
    for _, p in ipairs({ "tripo", "sellerpic" }) do
      local id = env:add { provider = p, queue = 0, run = 0, final = "failed", error_message = HOSTILE }
      local task = assert(env:client(p):status(id))
      assert.are.equal("failed", task.state)
      assert.are.equal(HOSTILE, task.error.message, p)
    end
    local plain = env:add { provider = "tripo", queue = 0, run = 0, final = "failed" }
    assert.are.equal("The task failed", assert(env:client("tripo"):status(plain)).error.message)
  end)

  it("page.render escapes every string and keeps only /files/ links", function()
    local page = require "openresty.page"
    local h = HOSTILE
    local html = page.render({ { job = h, provider = h, state = h, tasks = {
      { id = h, type = h, state = h, error = h, error_code = h, progress = 50, eta = 30, files = {} },
      { id = "t2", type = "text_to_model", state = "running", progress = 42, eta = 75, files = {} },
      { id = "t3", type = "text_to_model", state = "succeeded", files = {
        { name = h, url = "/files/t3_rendered_image.webp", bytes = 10, image = true },
        { name = "model", url = "javascript:alert(1)", bytes = 10 },
        { name = "model", url = "/files/t3_model.glb", bytes = 2048 } } },
    } } }, { nonce = 'n"once', now = 0 })
    assert.are.equal(1, count(html, "<script"))
    assert.is_nil(stranger(html))
    assert.falsy(html:find('onerror="', 1, true))
    assert.falsy(html:find("<img src=x", 1, true))
    assert.falsy(html:find("javascript:", 1, true))
    assert.truthy(html:find('<script nonce="n&quot;once">', 1, true))
    assert.truthy(html:find('<tr class="task unknown" data-task="&lt;script&gt;', 1, true)) -- an unknown state's class
    assert.truthy(html:find('<progress max="100" value="42">', 1, true))
    assert.truthy(html:find("ETA 1 min 15 s", 1, true))
    assert.truthy(html:find('<a class="file" href="/files/t3_model.glb" download>model</a> <span class="bytes">2.0 KiB</span>', 1, true))
    assert.truthy(html:find('alt="&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;document.title=&#39;pwned&#39;&quot;&gt;"', 1, true))
    assert.truthy(page.render({}, { nonce = "x" }):find("No jobs yet", 1, true))
  end)
end)

local reason = probe()

describe("OpenResty example: the jobs page in headless Chromium #openresty", function()
  if reason then
    it("is pending: " .. reason, function() pending(reason) end)
    return
  end

  local env, app, out
  local tasks = {} -- name -> id
  local want = {}  -- id -> state

  setup(function()
    env = fe.start()
    out = fe.tmpdir()
    os.execute("chmod 0777 " .. fe.q(out))
    app = example.start(env, out)
    -- running tasks: made first, then the fake's clock moves 400 s on, so each is well into
    -- its run (40 %, 80 %, 10 %) and stays running for the rest of the file
    tasks.r1 = env:add { provider = "tripo", queue = 0, run = 1000 }
    tasks.r2 = env:add { provider = "tripo", queue = 0, run = 500 }
    tasks.r3 = env:add { provider = "tripo", queue = 0, run = 4000 }
    assert.truthy(curl("-X POST " .. fe.q(env.url .. "/_fake/advance?seconds=400")):find('"ok"'))
    tasks.q1 = env:add { provider = "tripo", queue = 900, run = 10 }
    tasks.q2 = env:add { provider = "tripo", queue = 1200, run = 10 }
    tasks.q3 = env:add { provider = "tripo", queue = 1500, run = 10 }
    tasks.s1 = env:add { provider = "tripo", queue = 0, run = 0.2, type = "text_to_model" } -- model.glb + rendered_image.webp
    tasks.s2 = env:add { provider = "tripo", queue = 0, run = 0.3, type = "text_to_image" } -- generated_image.png
    tasks.f1 = env:add { provider = "tripo", queue = 0, run = 0.2, final = "failed", error_message = HOSTILE }
    tasks.f2 = env:add { provider = "tripo", queue = 0, run = 0.2, final = "failed", type = HOSTILE_TYPE,
      error_message = BREAKOUT }
    for name, id in pairs(tasks) do
      want[id] = ({ r = "running", q = "queued", s = "succeeded", f = "failed" })[name:sub(1, 1)]
    end
    local jobs = {
      { tasks.r1, tasks.q1, tasks.s1, tasks.f1, tasks.r2 },
      { tasks.q2, tasks.s2, tasks.f2, tasks.r3, tasks.q3 },
    }
    for _, ids in ipairs(jobs) do
      local created = cjson.decode(curl("-d " .. fe.q(cjson.encode { provider = "tripo", ids = ids }) .. " " .. app.url .. "/jobs"))
      assert.truthy(created.job, "no job: " .. tostring(created.error))
    end
    -- until GET /jobs (what the page shows) has every task in its state and every result saved
    local ready, last
    for _ = 1, 150 do
      last = cjson.decode(curl(app.url .. "/jobs"))
      ready = true
      local n = 0
      for _, j in ipairs(last.jobs) do
        for _, t in ipairs(j.tasks) do
          n = n + 1
          local files = type(t.files) == "table" and #t.files or 0
          if t.state ~= want[t.id] or (t.state == "succeeded" and (files == 0 or t.downloading))
            or (t.state == "running" and not t.progress) or (t.state == "failed" and not t.error) then
            ready = false
          end
        end
      end
      if ready and n == 10 then break end
      os.execute("sleep 0.2")
    end
    assert.is_true(ready, "the jobs never reached their states: " .. cjson.encode(last))
  end)

  teardown(function()
    if app then app.stop() end
    if env then env:stop() end
    if out then fe.rmdir(out) end
  end)

  -- Checks what the page shows in both modes (dom: Chromium's dump).
  local function check_tasks(dom)
    assert.are.equal(10, count(dom, "<tr[^>]-data%-task="), dom)
    for id, state in pairs(want) do
      local tag, cells = row(dom, id)
      assert.truthy(tag, "no row for task " .. id)
      assert.are.equal(state, attr(tag, "data-state"), tag)
      assert.truthy(cells:find('<span class="badge ' .. state .. '">' .. state .. "</span>", 1, true), cells)
    end
    for _, name in ipairs({ "r1", "r2", "r3" }) do
      local _, cells = row(dom, tasks[name])
      local p = tonumber(cells:match('<progress[^>]-value="(%d+)"'))
      assert.truthy(p and p > 0 and p < 100, "no progress bar in the running row: " .. cells)
      assert.truthy(cells:find("ETA %d"), "no ETA in the running row: " .. cells)
    end
    local _, r2 = row(dom, tasks.r2)
    assert.truthy(tonumber(r2:match('value="(%d+)"')) >= 75, r2) -- 400 s of its 500
    for _, name in ipairs({ "q1", "q2", "q3" }) do
      local _, cells = row(dom, tasks[name])
      assert.falsy(cells:find("<progress", 1, true), cells)
      assert.truthy(cells:find("in the queue", 1, true), cells)
    end
    for _, name in ipairs({ "f1", "f2" }) do
      local _, cells = row(dom, tasks[name])
      assert.falsy(cells:find("<progress", 1, true), cells)
      assert.truthy(cells:find('<div class="error">', 1, true), cells)
    end
    local _, s1 = row(dom, tasks.s1)
    assert.truthy(s1:find('<img[^>]- src="/files/' .. pat(tasks.s1) .. '_rendered_image%.webp"'), s1)
    assert.truthy(s1:find('<a class="file" href="/files/' .. pat(tasks.s1) .. '_model%.glb"'), s1)
    local _, s2 = row(dom, tasks.s2)
    assert.truthy(s2:find('<img[^>]- src="/files/' .. pat(tasks.s2) .. '_generated_image%.png"'), s2)
    -- the hostile strings: shown as text, nothing injected
    local _, f1 = row(dom, tasks.f1)
    assert.truthy(f1:find('&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror="document.title=\'pwned\'"&gt;', 1, true), f1)
    local f2tag, f2 = row(dom, tasks.f2)
    assert.are.equal("failed", attr(f2tag, "data-state"))
    assert.truthy(f2:find('<td class="type">&lt;b id="injected-type"&gt;bold&lt;/b&gt;</td>', 1, true), f2)
    assert.truthy(f2:find([["quoted" &amp; 'single' &lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;i id="injected-cell"&gt;x&lt;/i&gt;]], 1, true), f2)
    assert.are.equal(1, count(dom, "<script"), "a script element was injected")
    assert.is_nil(stranger(dom))
    assert.falsy(dom:find("<[^>]-onerror"), "an onerror attribute was injected")
    assert.falsy(dom:find('<img src="x"', 1, true))
    assert.falsy(dom:find('<[bi] id="injected'), "an element was injected")
    assert.truthy(dom:find("<title>taskapi jobs</title>", 1, true))
    assert.are.equal(2, count(dom, '<section class="job"'))
  end

  it("with JavaScript: the script redraws every task from GET /jobs; a thumbnail loads; hostile text stays text", function()
    local dom = assert(chromium("--virtual-time-budget=5000 --dump-dom", app.url .. "/"))
    -- the script ran and drew the page from the JSON (not just the server's table)
    assert.truthy(dom:find('<html[^>]- data%-js="on"'), dom:sub(1, 300))
    assert.truthy(dom:find('<div id="jobs" data%-rendered="json">'), "the script did not redraw the page")
    assert.truthy(dom:find("live · updated", 1, true))
    check_tasks(dom)
    local _, s1 = row(dom, tasks.s1)
    local _, s2 = row(dom, tasks.s2)
    assert.truthy(s1:find('<img[^>]- data%-loaded="1"') or s1:find('<img[^>]-data%-loaded="1"'), "the webp thumbnail did not load: " .. s1)
    assert.truthy(s2:find('<img[^>]-data%-loaded="1"'), "the png thumbnail did not load: " .. s2)
    assert.falsy(dom:find('data-loaded="0"', 1, true), "a thumbnail failed to load")
  end)

  it("without JavaScript: the server-rendered table has every task, escaped", function()
    local dom = dom_without_js(app.url .. "/")
    assert.falsy(dom:find('data-js="on"', 1, true), "the script ran")
    assert.falsy(dom:find('data-rendered="json"', 1, true))
    assert.truthy(dom:find("without JavaScript the page reloads every 5 s", 1, true))
    check_tasks(dom)
  end)

  it("serves the results it downloaded and nothing else of the folder", function()
    local code = curl("-o /dev/null -w '%{http_code} %{content_type}' " .. app.url .. "/files/" .. tasks.s2 .. "_generated_image.png")
    assert.are.equal("200 image/png", code)
    local f = assert(io.open(out .. "/not-a-result.txt", "wb"))
    f:write("secret")
    f:close()
    assert.are.equal("404", curl("-o /dev/null -w '%{http_code}' " .. app.url .. "/files/not-a-result.txt"))
    local up = curl("-o /dev/null -w '%{http_code}' " .. app.url .. "/files/..%2Fetc%2Fpasswd")
    assert.truthy(up == "404" or up == "400" or up == "403", up)
    -- the page's own script runs under a nonce CSP: markup a provider slipped in could not run
    local headers = curl("-D - -o /dev/null " .. app.url .. "/")
    assert.truthy(headers:lower():find("content%-security%-policy: default%-src 'none'; script%-src 'nonce%-"), headers)
  end)

  it("takes a screenshot of the live page", function()
    local png = os.getenv("TASKAPI_JOBS_PAGE_PNG") or (out .. "/jobs-page.png")
    os.remove(png)
    assert(chromium("--virtual-time-budget=5000 --window-size=1280,1000 --screenshot=" .. fe.q(png), app.url .. "/"))
    local f = assert(io.open(png, "rb"), "no screenshot at " .. png)
    local head = f:read(24)
    f:close()
    assert.are.equal("\137PNG\r\n\26\n", head:sub(1, 8))
    local w = head:byte(17) * 16777216 + head:byte(18) * 65536 + head:byte(19) * 256 + head:byte(20)
    assert.are.equal(1280, w)
  end)
end)
