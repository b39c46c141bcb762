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
local M = {}

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

return M
