-- bench/plot.lua: the benchmark's plots as plain SVG text, beside bench/results.md (make bench
-- runs it after bench/run.lua; alone: lua5.4 bench/plot.lua from the repository root).
--   bench/policy.svg  requests per task against the delay between a task's end and the caller
--                     seeing it, for each polling policy (taskapi, fixed 2 s, the Tripo SDK),
--                     with and without a reported ETA: the numbers of bench/policy.lua, run
--                     here (a simulation on an injected clock, deterministic, under a second)
--   bench/ratios.svg  each case's ratio to its peer, with its target, from bench/results.md
-- Arguments: [results.md path] [output folder] (bench/results.md, bench/).
-- run from the repository root: the Lua layer and this runtime's build of the C module
-- (bench/policy.lua reads bench/lib.lua, which loads it)
package.path = "./?.lua;./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./build/" .. (jit and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")) .. "/?.so;" .. package.cpath
local results_path = arg[1] or "bench/results.md"
local out_dir = (arg[2] or "bench"):gsub("/+$", "")

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }
local function esc(s) return (tostring(s):gsub('[&<>"]', ESC)) end

local function num(x)
  -- integral values without a fraction, others with up to 2 decimals, never "1e+02"
  if x == math.floor(x) then return string.format("%d", x) end
  return (string.format("%.2f", x):gsub("0+$", ""):gsub("%.$", ""))
end

-- An SVG document being written: a list of elements.
local function svg(w, h)
  local d = { w = w, h = h, parts = {} }
  function d.add(s) d.parts[#d.parts + 1] = s end
  function d.line(x1, y1, x2, y2, style)
    d.add(string.format('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" %s/>', x1, y1, x2, y2, style or 'stroke="#333"'))
  end
  function d.text(x, y, s, style)
    d.add(string.format('<text x="%.1f" y="%.1f" %s>%s</text>', x, y, style or "", esc(s)))
  end
  function d.rect(x, y, rw, rh, style)
    d.add(string.format('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" %s/>', x, y, rw, rh, style or ""))
  end
  function d.circle(x, y, r, style)
    d.add(string.format('<circle cx="%.1f" cy="%.1f" r="%.1f" %s/>', x, y, r, style or ""))
  end
  function d.finish(path, title)
    local f = assert(io.open(path, "w"))
    f:write(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" ' ..
      'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">\n', d.w, d.h, d.w, d.h))
    f:write("<title>", esc(title), "</title>\n")
    f:write('<rect width="100%" height="100%" fill="#fff"/>\n')
    f:write(table.concat(d.parts, "\n"), "\n</svg>\n")
    f:close()
    io.stderr:write("plot: wrote ", path, "\n")
  end
  return d
end

-- Ticks for a linear axis 0..max: a step of 1, 2 or 5 x 10^k giving 4 to 8 ticks.
local function linear_ticks(max)
  local raw = max / 5
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local step = mag
  for _, m in ipairs({ 1, 2, 5, 10 }) do
    if raw <= m * mag then step = m * mag break end
  end
  local top = math.ceil(max / step - 1e-9) * step
  local ticks = {}
  for i = 0, math.floor(top / step + 0.5) do ticks[#ticks + 1] = i * step end
  return ticks, top
end

----------------------------------------------------------------------------------------------
-- Polling policies: requests per task (log scale) against the detection delay

local COLORS = { taskapi = "#1f6fd1", ["fixed 2 s"] = "#888888", ["Tripo SDK"] = "#d9822b" }
local ORDER = { "taskapi", "fixed 2 s", "Tripo SDK" }

local function plot_policy(path)
  local policy = require "bench.policy"
  local scenarios = policy.results()
  local W, H = 800, 440
  local d = svg(W, H)
  d.text(W / 2, 24, "Polling policy: requests per task against detection delay (1,000 simulated tasks)",
    'text-anchor="middle" font-size="14" font-weight="bold"')
  local pw, ph, top = 300, 230, 60
  -- one y scale for both panels: log10 from 5 to 200 requests per task
  local ylo, yhi = math.log(5, 10), math.log(200, 10)
  for k, s in ipairs(scenarios) do
    local x0 = 70 + (k - 1) * (pw + 80)
    local ymap = function(v) return top + ph - (math.log(v, 10) - ylo) / (yhi - ylo) * ph end
    local maxd = 0
    for _, name in ipairs(ORDER) do maxd = math.max(maxd, s.r[name].p95) end
    local xt, xmax = linear_ticks(maxd * 1.1)
    local xmap = function(v) return x0 + v / xmax * pw end
    d.text(x0 + pw / 2, top - 10, s.with_eta and "ETA reported" or "no ETA reported",
      'text-anchor="middle" font-size="13" font-weight="bold"')
    d.rect(x0, top, pw, ph, 'fill="none" stroke="#999"')
    for _, v in ipairs(xt) do
      local x = xmap(v)
      d.line(x, top + ph, x, top + ph + 4)
      if v > 0 then d.line(x, top, x, top + ph, 'stroke="#eee"') end
      d.text(x, top + ph + 17, num(v), 'text-anchor="middle"')
    end
    for _, v in ipairs({ 5, 10, 20, 50, 100, 200 }) do
      local y = ymap(v)
      d.line(x0 - 4, y, x0, y)
      if v > 5 and v < 200 then d.line(x0, y, x0 + pw, y, 'stroke="#eee"') end
      d.text(x0 - 7, y + 4, num(v), 'text-anchor="end"')
    end
    d.text(x0 + pw / 2, top + ph + 36, "delay from a task's end to the caller seeing it (s)", 'text-anchor="middle"')
    d.add(string.format('<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">requests per task (log scale)</text>',
      x0 - 42, top + ph / 2))
    for i, name in ipairs(ORDER) do
      local r = s.r[name]
      local c = COLORS[name]
      local y = ymap(r.requests)
      -- the median as a dot, a line out to the 95th percentile ending in a tick
      d.line(xmap(r.median), y, xmap(r.p95), y, 'stroke="' .. c .. '" stroke-width="2"')
      d.line(xmap(r.p95), y - 5, xmap(r.p95), y + 5, 'stroke="' .. c .. '" stroke-width="2"')
      d.circle(xmap(r.median), y, 5, 'fill="' .. c .. '"')
      -- each policy's numbers under its panel, a key in its colour
      local ly = top + ph + 58 + (i - 1) * 16
      d.circle(x0 + 6, ly - 4, 4, 'fill="' .. c .. '"')
      d.text(x0 + 16, ly, string.format("%s: %.1f req/task, median %.2f s, p95 %.2f s", name, r.requests,
        r.median, r.p95), 'fill="' .. c .. '" font-size="11"')
    end
  end
  d.text(70, H - 14, "dot: median delay; line to the tick: 95th percentile. Source: bench/policy.lua (seeded: the B5 rows of " ..
    "bench/results.md)", 'font-size="11" fill="#555"')
  d.finish(path, "taskapi polling policy: requests per task against detection delay")
end

----------------------------------------------------------------------------------------------
-- Ratios to peers, from bench/results.md

-- Which way is better, by the peer a ratio names: throughput ratios (x wrk, x curl) are
-- better high; request and instruction counts (x SDK requests, x peer) better low.
local function higher_is_better(ratio)
  return ratio:find("x wrk") ~= nil or ratio:find("x curl") ~= nil or ratio:find("rate") ~= nil -- [B7: x the peer's rate]
end

local function read_rows(path)
  local f = io.open(path, "r")
  if not f then return nil, "cannot read " .. path end
  local rows, run = {}, nil
  for line in f:lines() do
    run = run or line:match("^Run on ([^,]+)")
    local cells = {}
    if line:sub(1, 2) == "| " then
      for c in (line .. "|"):gmatch("%s*(.-)%s*|") do cells[#cells + 1] = c end
      -- cells[1] is the empty text before the first bar
      local case, ratio, target, met = cells[2], cells[5], cells[6], cells[7]
      local value = ratio and tonumber(ratio:match("^([%d%.]+) x "))
      if value then
        local short = case:gsub("`", ""):match("^(.-)[,(]") or case:gsub("`", "")
        rows[#rows + 1] = { case = case, short = short:gsub("%s+$", ""), value = value, ratio = ratio,
          target = target, met = met:gsub("%*", ""), tail = case:match(",%s*([^,]+)$") }
      end
    end
  end
  f:close()
  -- labels that repeat (B5 with and without an ETA) take the case's last part
  local seen = {}
  for _, r in ipairs(rows) do seen[r.short] = (seen[r.short] or 0) + 1 end
  for _, r in ipairs(rows) do
    if seen[r.short] > 1 and r.tail then r.short = r.short .. ", " .. r.tail end
  end
  return rows, run
end

local function plot_ratios(path, rows, run)
  local rowh, top, left, pw = 30, 56, 330, 330
  local W, H = left + pw + 200, top + #rows * rowh + 90
  local d = svg(W, H)
  d.text(W / 2, 22, "taskapi against its peers: ratio of each case, measured in the same run",
    'text-anchor="middle" font-size="14" font-weight="bold"')
  d.text(W / 2, 40, "from bench/results.md" .. (run and (" (run on " .. run .. ")") or ""),
    'text-anchor="middle" font-size="11" fill="#555"')
  local maxv = 1
  for _, r in ipairs(rows) do maxv = math.max(maxv, r.value) end
  local ticks, xmax = linear_ticks(maxv * 1.1)
  local xmap = function(v) return left + v / xmax * pw end
  local bottom = top + #rows * rowh
  for _, v in ipairs(ticks) do
    local x = xmap(v)
    d.line(x, top, x, bottom, 'stroke="#eee"')
    d.line(x, bottom, x, bottom + 4)
    d.text(x, bottom + 17, num(v), 'text-anchor="middle"')
  end
  d.text(left + pw / 2, bottom + 34, "ratio to the peer (1 = the same)", 'text-anchor="middle"')
  for i, r in ipairs(rows) do
    local y = top + (i - 1) * rowh
    -- the target, where the row has a numeric one (">= 0.80 x wrk"); "lower than the peer" is 1
    local t = tonumber((r.target or ""):match(">=%s*([%d%.]+)"))
    if not t and ((r.target or ""):find("lower than the peer") or (r.target or ""):find("fewer")) then t = 1 end
    local fill = r.met == "yes" and "#3f9b4f" or (r.met == "no" and "#d04a3a" or "#9aa3ad")
    d.rect(left, y + 6, xmap(r.value) - left, rowh - 12, 'fill="' .. fill .. '"')
    d.text(left - 8, y + rowh / 2 + 4, r.short, 'text-anchor="end"')
    -- the value right of the bar, the parity line and the target, whichever ends last
    local lx = math.max(xmap(r.value), xmap(1), t and xmap(t) or 0) + 6
    d.text(lx, y + rowh / 2 + 4, r.ratio .. (higher_is_better(r.ratio) and " (higher is better)" or " (lower is better)"),
      'font-size="11" fill="#333"')
    if t then
      d.line(xmap(t), y + 2, xmap(t), y + rowh - 2, 'stroke="#111" stroke-width="2.5"')
    end
  end
  d.line(xmap(1), top - 4, xmap(1), bottom, 'stroke="#111" stroke-dasharray="4 3"')
  d.line(left, bottom, left + pw, bottom)
  d.line(left, top, left, bottom)
  -- legend
  local ly = bottom + 56
  local items = { { "#3f9b4f", "target met" }, { "#d04a3a", "target missed" }, { "#9aa3ad", "information (no target)" } }
  local lx = 20
  for _, it in ipairs(items) do
    d.rect(lx, ly - 10, 14, 12, 'fill="' .. it[1] .. '"')
    d.text(lx + 20, ly, it[2])
    lx = lx + 40 + #it[2] * 6.5
  end
  d.line(lx, ly - 12, lx, ly + 3, 'stroke="#111" stroke-width="2.5"')
  d.text(lx + 8, ly, "target")
  d.line(lx + 70, ly - 12, lx + 70, ly + 3, 'stroke="#111" stroke-dasharray="4 3"')
  d.text(lx + 78, ly, "parity (1)")
  d.finish(path, "taskapi benchmark ratios to peers")
end

local rows, run = read_rows(results_path)
local ok = true
plot_policy(out_dir .. "/policy.svg")
if rows and #rows > 0 then
  plot_ratios(out_dir .. "/ratios.svg", rows, run)
else
  io.stderr:write("plot: no ratios in ", results_path, " (", tostring(run), "): ratios.svg not written\n")
  ok = false
end
os.exit(ok and 0 or 1)
