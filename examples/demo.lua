-- The demo of `make demo`: starts the local fake provider, creates tasks of both providers on
-- it (Tripo through its current V3 API; one task with network faults, one that fails), waits for all of them concurrently, downloads
-- each result as its task finishes, prints what it did and stops the server.
local taskapi = require "taskapi"
local server = require "taskapi.fake.server"

local out = arg[1] or "demo-out"
os.execute("mkdir -p '" .. out .. "'")

local fake = assert(server.start{ ttl = 300 })
print("fake provider on " .. fake.url)

local common = { api_key = "test-key", min_interval = 0, backoff = 0.1 }
local function client(provider, base)
  local o = { provider = provider, base_url = fake.url .. base }
  for k, v in pairs(common) do o[k] = v end
  return assert(taskapi.new(o))
end
local tripo = client("tripo", "/tripo/v3")
local sellerpic = client("sellerpic", "/sellerpic")

local jobs = {
  { tripo, { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a small red teapot",
    fake = { queue = 1, run = 3 } } },
  { tripo, { type = "image_to_multiview", input = "https://example.invalid/chair.png",
    fake = { queue = 0.5, run = 2, faults = { server_errors = 2, drop_download = 0.5 } } } },
  { tripo, { type = "text_to_image", prompt = "a lamp", fake = { queue = 0.5, run = 1.5 } } },
  { tripo, { type = "text_to_model", model_version = "v3.1-20260211", prompt = "forbidden",
    fake = { queue = 0.5, run = 1, final = "failed" } } },
  { sellerpic, { type = "instructEdit", prompt = "white background", fake = { queue = 1, run = 2, results = 2 } } },
  { sellerpic, { type = "imageToVideo", prompt = "turntable", fake = { queue = 0.5, run = 2.5, kind = "video" } } },
}

local by_client = { [tripo] = {}, [sellerpic] = {} }
for _, j in ipairs(jobs) do
  local id = assert(j[1]:create(j[2]))
  print(string.format("created %-9s %-26s %s", j[1].def.name, j[2].type, id))
  table.insert(by_client[j[1]], id)
end

local t0 = require("taskapi.core").now()
local failures, saved = 0, 0
taskapi.run(function()
  local hs = {}
  for c, ids in pairs(by_client) do
    hs[#hs + 1] = taskapi.spawn(function()
      local fmt = c == sellerpic and "webp" or nil
      for task, err in c:each_completed(ids, { interval = 0.5, timeout = 60 }) do
        if err then
          failures = failures + 1
          print("wait failed: " .. tostring(err))
        elseif not task.ok then
          print(string.format("%-9s %s ended %s: %s", task.provider, task.id, task.state,
            task.error and task.error.message or "-"))
        else
          local files, derr = c:download(task, { dir = out, format = fmt, overwrite = true })
          if not files then
            failures = failures + 1
            print("download failed: " .. tostring(derr))
          else
            for _, f in ipairs(files) do
              saved = saved + 1
              print(string.format("%-9s %s -> %s (%d bytes, %s)", task.provider, task.id, f.path, f.bytes,
                f.content_type or "?"))
            end
          end
        end
      end
      return true
    end)
  end
  for _, h in ipairs(hs) do assert(h:join()) end
end)

print(string.format("%d files saved in %s in %.1f s; %d failures", saved, out, require("taskapi.core").now() - t0,
  failures))
fake.stop()
os.exit(failures == 0 and saved >= 10 and 0 or 1)
