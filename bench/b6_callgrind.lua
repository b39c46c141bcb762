-- B6: instructions per `status` call, decode and normalize included, counted by valgrind's
-- callgrind (stable, unlike times): a Lua 5.4 script doing one warm-up call and N calls,
-- minus the same script doing the warm-up only, over N. taskapi's client:status against
-- luasocket + lua-cjson doing the same request (the same V3 status document, L.STATUS_PATH),
-- decode and normalization (B1's peer).
local L = require "bench.lib"

local CALLS = tonumber(os.getenv("BENCH_B6_CALLS")) or 1000

local mode = ...
if mode == "child" then
  local _, which, url, n = ...
  n = tonumber(n)
  if which == "taskapi" then
    local c = L.static_client(url)
    assert(c:status(L.ID))
    for _ = 1, n do assert(c:status(L.ID)) end
  else
    -- B1's luasocket peer, timed loop skipped: warm-up and n calls
    local b1 = require "bench.b1_sequential"
    b1.modes.luasocket(url, n, 1)
  end
  L.emit { n = n }
  return
end

local M = { name = "B6" }

local function instructions(which, url, n)
  local out = os.tmpname()
  L.child("lua5.4", "b6_callgrind", { which, url, n },
    "valgrind --tool=callgrind --callgrind-out-file=" .. out)
  local f = assert(io.open(out))
  local s = f:read("*a")
  f:close()
  os.remove(out)
  return tonumber(s:match("\nsummary:%s*(%d+)") or s:match("\ntotals:%s*(%d+)"))
end

function M.per_call(which, url, n)
  return (instructions(which, url, n) - instructions(which, url, 0)) / n
end

-- Both read one document: the body at L.STATUS_PATH is the one client:status reads (its
-- decoded data equals task.raw). Returns its size in bytes.
local function same_document(url)
  local core, cjson = require "taskapi.core", require "cjson"
  local m = core.multi()
  local res = assert(m:request { url = url .. L.STATUS_PATH })
  m:close()
  local peer = cjson.decode(res.body).data
  local raw = assert(L.static_client(url):status(L.ID)).raw
  local function same(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b or (a == cjson.null and b == core.null) end
    for k, v in pairs(a) do if not same(v, b[k]) then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
  end
  assert(same(peer, raw), "B6: the peer's document is not the one client:status reads")
  return #res.body
end

function M.run(env)
  local bytes = same_document(env.url)
  local t = M.per_call("taskapi", env.url, CALLS)
  local p = M.per_call("luasocket", env.url, CALLS)
  return {
    L.row("B6 instructions per `client:status` (callgrind, Lua 5.4, " .. L.fmt(CALLS) .. " calls)",
      L.fmt(t) .. " instr/call", "luasocket + lua-cjson + same normalization " .. L.fmt(p) .. " instr/call (both read the same " ..
        L.fmt(bytes) .. "-byte V3 status body)",
      L.fmt(t / p, 2) .. " x peer", "lower than the peer", t < p),
  }
end

return M
