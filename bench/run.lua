-- The benchmark runner: starts the nginx fake once, runs each case (one file per case, each
-- returning rows), prints the Markdown table and writes it to bench/results.md with the
-- machine's description. Arguments pick cases by name (B1 ... B8, many).
local L = require "bench.lib"

local CASES = { "b1_sequential", "b2_concurrent", "b3_download", "b4_tasks", "many_tasks", "policy", "b6_callgrind", "b7_openresty", "b8_ledger" }

local want = {}
for _, a in ipairs(arg) do want[a:upper()] = true end

local function machine()
  local cpu = L.sh1("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-"):gsub("^%s+", "")
  return string.format("%s cores (`nproc`), %s, Linux %s, %s; peers: %s, %s", L.sh1("nproc"), cpu,
    L.sh1("uname -r"), L.sh1("lua5.4 -v 2>&1"):match("^Lua %S+"), "wrk " .. (L.sh1("wrk -v 2>&1"):match("wrk (%S+)") or "?"),
    L.sh1("curl --version"):match("^curl %S+"))
end

local fake = L.start_fake(900)
local rows, failures = {}, {}
local t0 = L.now()
for _, name in ipairs(CASES) do
  local case = require("bench." .. name)
  if next(want) == nil or want[case.name:upper()] then
    io.stderr:write("bench: ", case.name, " ...\n")
    local c0 = L.now()
    local ok, r = pcall(case.run, { url = fake.url, files_dir = fake.files_dir })
    if ok then
      for _, row in ipairs(r) do rows[#rows + 1] = row end
    else
      failures[#failures + 1] = case.name .. ": " .. tostring(r)
      io.stderr:write("bench: ", case.name, " failed: ", tostring(r), "\n")
    end
    io.stderr:write(string.format("bench: %s done in %.0f s\n", case.name, L.now() - c0))
  end
end
fake.stop()

local out = {
  "| case | taskapi | peers in the same run | ratio | target | met |",
  "|---|---|---|---|---|---|",
}
for _, r in ipairs(rows) do
  out[#out + 1] = string.format("| %s | %s | %s | %s | %s | %s |", r.case, r.taskapi, r.peers, r.ratio, r.target, r.met)
end
local table_md = table.concat(out, "\n")
print(table_md)
local doc = "# taskapi benchmarks (`make bench`)\n\n" ..
  "Machine: " .. machine() .. ".\n" ..
  string.format("Run on %s, %.0f s in all. Medians of %s; ratios against peers measured in the same run.\n\n",
    os.date("!%Y-%m-%d %H:%M UTC"), L.now() - t0, "alternating rounds (B1, B2: 3 rounds of 3 s / fixed call counts; B3: 3 rounds)") ..
  table_md .. "\n" ..
  (#failures > 0 and "\nFailed cases:\n\n- " .. table.concat(failures, "\n- ") .. "\n" or "")
if next(want) == nil then
  local f = assert(io.open("bench/results.md", "w"))
  f:write(doc)
  f:close()
else
  io.stderr:write("bench: a subset of the cases ran: bench/results.md left as it was\n")
end
os.exit(#failures == 0 and 0 or 1)
