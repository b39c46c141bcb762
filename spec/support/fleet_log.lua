-- spec/support/fleet_log.lua: what the fake's request log (GET /_fake/log) tells of a fleet's
-- run. Status reads: Tripo V3 GET /tripo/v3/tasks/{id}, V2 GET .../task/{id}, SellerPic GET
-- /generate?id=, and the list reads (V3 POST /tasks/list, V2 /task/batch) whose log entry
-- names the tasks it answered (`ids`); creates (`create.task_id`); file GETs and those with
-- a Range header.
--
--   local fl = require "support.fleet_log"
--   local r = fl.parse(env:log())
--   r.polls[id]            -- the times (the fake's clock, s) the task was read, in order
--   r.status_requests, r.batch_reads, r.reads (every task read, one per id of a list read)
--   r.created[id]          -- when the create of the task was answered
--   r.first                -- the time of the first status read
--   r.file_gets, r.ranged  -- file GETs, those that asked for a Range
--   fl.closest(r.polls)    -- the shortest time between two reads of one task, and its id
--   fl.longest_unseen(r.polls, finals [, from]) -- the longest time from a task's end
--                             (finals[id], or `from` when later: the fleet's start) to its
--                             first read at or after it, and its id
--
-- And what the fleet specs (spec/fleet_spec.lua, spec/openresty/fleet_spec.lua) share:
--   fl.create(env, url, n) -> tasks {id=, provider=, size=, run=}, results: n tasks of Tripo
--                             V3 and n of SellerPic made through clients with the ledger at url
--                             (every 50th with a large file that stalls halfway)
--   fl.count_files(dir)    -> whole files, hidden (part) files
--   fl.watch(dir, results, fire, at, running) -> the time (fe.now()) the dir held every result,
--                             or nil after 90 s or once running() is false; fire(part files)
--                             once a share `at` of them is there
--   fl.check(env, mark, url, tasks, results, dir, min, numbers): every task finalized, every
--                             result saved once (saves = 1) with the served bytes (SHA-256),
--                             no part file left, no task read twice within min seconds (the
--                             fake's log after mark); adds the log's numbers to `numbers`
local fe = require "support.fake_env"
local assert = require "luassert"

local M = {}

M.MIN = 0.5                 -- seconds: the minimum interval the fleet specs lower the providers' to
M.SIZE, M.BIG = 8000, 400000 -- bytes of a result; of the stalled ones (every 50th task)
M.TOLERANCE = 0.02          -- seconds: the fake's clock is nginx's cached time
local PARAMS = {
  tripo = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a chair" },
  sellerpic = { type = "instructEdit", prompt = "white background" },
}

local function status_id(e)
  if e.method ~= "GET" then return nil end
  local id = e.path:match("/tripo/v3/tasks/([^/]+)$") or e.path:match("/tripo/v2/openapi/task/([^/]+)$")
  if id and id ~= "list" and id ~= "batch" then return id end
  if e.path:match("/sellerpic/v1/api/generate$") and e.query then return e.query.id end
  return nil
end

function M.parse(log)
  local r = { polls = {}, created = {}, first = math.huge, status_requests = 0, batch_reads = 0, reads = 0, file_gets = 0, ranged = 0 }
  local function read(id, t)
    local list = r.polls[id]
    if not list then
      list = {}
      r.polls[id] = list
    end
    list[#list + 1] = t
    r.reads = r.reads + 1
  end
  for _, e in ipairs(log) do
    local id = status_id(e)
    if id or e.ids then r.first = math.min(r.first, e.time) end
    if id then
      r.status_requests = r.status_requests + 1
      read(id, e.time)
    elseif e.ids then
      r.status_requests, r.batch_reads = r.status_requests + 1, r.batch_reads + 1
      for _, x in ipairs(e.ids) do read(x, e.time) end
    elseif e.create and e.create.task_id then
      r.created[e.create.task_id] = e.time
    elseif e.method == "GET" and e.path:sub(1, 7) == "/files/" then
      r.file_gets = r.file_gets + 1
      if e.headers and e.headers.range then r.ranged = r.ranged + 1 end
    end
  end
  for _, list in pairs(r.polls) do table.sort(list) end
  return r
end

function M.closest(polls)
  local best, who = math.huge, nil
  for id, list in pairs(polls) do
    for i = 2, #list do
      if list[i] - list[i - 1] < best then best, who = list[i] - list[i - 1], id end
    end
  end
  return best, who
end

function M.longest_unseen(polls, finals, from)
  local worst, who = 0, nil
  for id, at in pairs(finals) do
    at = math.max(at, from or at)
    local seen
    for _, t in ipairs(polls[id] or {}) do
      if t >= at then
        seen = t
        break
      end
    end
    local d = seen and seen - at or math.huge
    if d > worst then worst, who = d, id end
  end
  return worst, who
end

function M.create(env, url, n)
  local ledger = require "taskapi.ledger"
  local taskapi = require "taskapi"
  local L = assert(ledger.open(url))
  local tasks, results = {}, 0
  for _, p in ipairs({ "tripo", "sellerpic" }) do
    local c = assert(taskapi.new { provider = p, api_key = fe.KEY, base_url = env.base[p], ledger = L, min_interval = 0 })
    for i = 1, n do
      local params = {}
      for k, v in pairs(PARAMS[p]) do params[k] = v end
      params.prompt = params.prompt .. " " .. i
      local big = i % 50 == 0
      local size = big and M.BIG or M.SIZE
      local run = 1.5 + (i % 6) * 0.5
      params.fake = { queue = 0, run = run, file_size = size, faults = big and { stall = 1.5 } or nil }
      tasks[#tasks + 1] = { id = assert(c:create(params)), provider = p, size = size, run = run }
      results = results + (p == "tripo" and 2 or 1)
    end
    c:close()
  end
  L:close()
  return tasks, results
end

function M.count_files(dir)
  local whole, parts = 0, 0
  for _, name in ipairs(fe.ls(dir)) do
    if name:sub(1, 1) == "." then parts = parts + 1 else whole = whole + 1 end
  end
  return whole, parts
end

function M.watch(dir, results, fire, at, running)
  local t0, fired = fe.now(), false
  while fe.now() - t0 < 90 do
    local whole, parts = M.count_files(dir)
    if whole >= results then return fe.now() end
    if fire and not fired and whole >= at * results then
      fired = true
      fire(parts)
    end
    if not running() then return nil end
    os.execute("sleep 0.05")
  end
  return nil
end

function M.check(env, mark, url, tasks, results, dir, min, numbers)
  local core = require "taskapi.core"
  local name = numbers.name
  local L = assert(require("taskapi.ledger").open(url))
  local by_id = {}
  for _, t in ipairs(tasks) do by_id[t.provider .. " " .. t.id] = t end
  local recs = assert(L:tasks {})
  assert.equal(#tasks, #recs)
  local files = 0
  for _, r in ipairs(recs) do
    local t = assert(by_id[r.provider .. " " .. r.id], "a task the spec did not make: " .. r.id)
    assert.is_true(r.done and r.ok, name .. ": " .. r.id .. " not finished: " .. tostring(r.state))
    assert.same({}, r.unsaved, name .. ": " .. r.id .. " has unsaved results")
    for _, o in ipairs(r.outputs) do
      local f = r.files[o.name]
      assert.equal(1, f.saves, name .. ": " .. r.id .. " " .. o.name .. " saved " .. f.saves .. " times (adopted " ..
        tostring(f.adopted) .. ")")
      local key = r.provider == "sellerpic" and o.name .. ".png" or o.name
      local want = core.sha256(fe.expected_bytes(r.id, key, t.size))
      assert.equal(want, f.sha256, name .. ": the ledger's SHA-256 of " .. f.path)
      assert.equal(want, core.sha256_file(f.path), name .. ": SHA-256 of " .. f.path)
      files = files + 1
    end
  end
  L:close()
  assert.equal(results, files)
  local whole, parts = M.count_files(dir)
  assert.equal(results, whole, name .. ": files on disk")
  assert.equal(0, parts, name .. ": part files left")
  -- the fake's log: never two reads of a task within the minimum interval
  local r = M.parse(env:log(mark))
  local closest, who = M.closest(r.polls)
  assert.is_true(closest >= min - M.TOLERANCE,
    string.format("%s: task %s read twice %.3f s apart (minimum %.1f s)", name, tostring(who), closest, min))
  local finals = {}
  for _, t in ipairs(tasks) do finals[t.id] = assert(r.created[t.id], "no create logged for " .. t.id) + t.run end
  numbers.closest, numbers.unseen = closest, M.longest_unseen(r.polls, finals, r.first)
  numbers.requests, numbers.reads = r.status_requests / #tasks, r.reads / #tasks
  numbers.batch_reads, numbers.ranged = r.batch_reads, r.ranged
  print(string.format("\nfleet %s: %d tasks, %s: %.1f s (creates %.1f s before); %.2f status requests " ..
    "and %.2f reads per task, %d batch reads; closest two reads of a task %.3f s; longest end -> seen %.2f s; " ..
    "file GETs with Range %d%s", name, #tasks, numbers.workers, numbers.wall, numbers.created, numbers.requests,
    numbers.reads, numbers.batch_reads, closest, numbers.unseen, r.ranged, numbers.note or ""))
  return numbers
end

return M
