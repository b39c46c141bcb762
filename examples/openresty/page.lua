-- The jobs page of the OpenResty example (GET /): one self-contained HTML document, no CDN,
-- no build step. The server renders every job and task as a plain table, so the page is
-- complete without JavaScript (and refreshes itself every 5 s through a <noscript> meta
-- refresh); its script then polls GET /jobs every second and redraws the same markup from
-- the JSON, with DOM calls only (textContent, setAttribute: never innerHTML with data).
-- Everything a provider says (task ids, types, states, error messages, file names) is
-- escaped here and set as text there.
local M = {}

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

--- HTML-escapes any value (text and attribute values alike).
local function esc(v)
  return (tostring(v):gsub("[&<>\"']", ESC))
end
M.escape = esc

local STATES = { "queued", "running", "succeeded", "failed", "cancelled", "banned", "expired", "unknown" }
local KNOWN = {}
for _, s in ipairs(STATES) do KNOWN[s] = true end

-- A state as a CSS class name: one of the known states, else "unknown" (never the raw text).
local function state_class(s)
  return KNOWN[s] and s or "unknown"
end

local function fmt_eta(s)
  s = tonumber(s)
  if not s then return nil end
  s = math.floor(s + 0.5)
  if s < 60 then return "ETA " .. s .. " s" end
  return string.format("ETA %d min %02d s", math.floor(s / 60), s % 60)
end

local function fmt_bytes(n)
  n = tonumber(n)
  if not n then return "" end
  if n < 1024 then return n .. " B" end
  if n < 1024 * 1024 then return string.format("%.1f KiB", n / 1024) end
  return string.format("%.1f MiB", n / 1048576)
end

local function is_files_url(u)
  return type(u) == "string" and u:sub(1, 7) == "/files/"
end

local function progress_cell(t)
  local out = {}
  if t.state == "running" then
    local p = math.max(0, math.min(100, math.floor(tonumber(t.progress) or 0)))
    out[#out + 1] = '<progress max="100" value="' .. p .. '">' .. p .. ' %</progress> <span class="pct">' .. p .. ' %</span>'
    local eta = fmt_eta(t.eta)
    if eta then out[#out + 1] = ' <span class="eta">' .. esc(eta) .. '</span>' end
  elseif t.state == "queued" and t.queue_position then
    out[#out + 1] = '<span class="queue">position ' .. esc(t.queue_position) .. ' in the queue</span>'
  elseif t.state == "succeeded" then
    out[#out + 1] = '<progress max="100" value="100">100 %</progress> <span class="pct">100 %</span>'
  end
  return table.concat(out)
end

local function results_cell(t)
  local out = {}
  for _, f in ipairs(type(t.files) == "table" and t.files or {}) do
    if is_files_url(f.url) then
      local label = tostring(f.name or "file")
      if f.image then
        out[#out + 1] = '<a class="thumb" href="' .. esc(f.url) .. '"><img src="' .. esc(f.url) .. '" alt="' .. esc(label) ..
          '" title="' .. esc(label) .. '" width="64" height="64"></a>'
      else
        out[#out + 1] = '<a class="file" href="' .. esc(f.url) .. '" download>' .. esc(label) .. '</a> <span class="bytes">' ..
          esc(fmt_bytes(f.bytes)) .. '</span>'
      end
    end
  end
  if t.downloading then out[#out + 1] = '<span class="note">downloading…</span>' end
  if t.error then
    out[#out + 1] = '<div class="error">' .. esc(t.error) ..
      (t.error_code and ' <span class="code">(code ' .. esc(t.error_code) .. ')</span>' or '') .. '</div>'
  end
  return table.concat(out, " ")
end

local function counts(views)
  local n, total = {}, 0
  for _, j in ipairs(views) do
    for _, t in ipairs(j.tasks) do
      local c = state_class(t.state)
      n[c] = (n[c] or 0) + 1
      total = total + 1
    end
  end
  local parts = {}
  for _, s in ipairs(STATES) do
    if n[s] then parts[#parts + 1] = '<span class="badge ' .. s .. '">' .. s .. ' ' .. n[s] .. '</span>' end
  end
  return #views .. (#views == 1 and " job, " or " jobs, ") .. total .. (total == 1 and " task " or " tasks ") ..
    table.concat(parts, " ")
end

local function job_section(j)
  local out = {}
  out[#out + 1] = '<section class="job" data-job="' .. esc(j.job) .. '"><h2>Job ' .. esc(j.job) ..
    ' <span class="provider">' .. esc(j.provider) .. '</span> <span class="job-state">' .. esc(j.state) .. '</span></h2>'
  out[#out + 1] = '<table class="tasks"><thead><tr><th>task</th><th>type</th><th>state</th><th>progress</th>' ..
    '<th>results</th></tr></thead><tbody>'
  for _, t in ipairs(j.tasks) do
    local s = state_class(t.state)
    out[#out + 1] = '<tr class="task ' .. s .. '" data-task="' .. esc(t.id) .. '" data-state="' .. esc(t.state) .. '">' ..
      '<td class="id"><code>' .. esc(t.id) .. '</code></td>' ..
      '<td class="type">' .. esc(t.type or "") .. '</td>' ..
      '<td class="state"><span class="badge ' .. s .. '">' .. esc(t.state) .. '</span></td>' ..
      '<td class="progress">' .. progress_cell(t) .. '</td>' ..
      '<td class="results">' .. results_cell(t) .. '</td></tr>'
  end
  out[#out + 1] = '</tbody></table></section>'
  return table.concat(out)
end

local STYLE = [[
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #f6f7f9; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
#summary { margin: 0 0 .8em; }
#live { color: #667; font-size: .9em; }
table.tasks { border-collapse: collapse; width: 100%; table-layout: fixed; background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e3e6ea; vertical-align: middle; }
th { background: #eef0f3; font-weight: 600; }
td.id code { font-size: .85em; word-break: break-all; }
th:nth-child(1) { width: 17em; } th:nth-child(2) { width: 11em; } th:nth-child(3) { width: 7em; }
th:nth-child(4) { width: 17em; }
td.type { word-break: break-word; }
td.progress { white-space: nowrap; }
progress { width: 9em; vertical-align: middle; }
.badge { display: inline-block; padding: .05em .55em; border-radius: .8em; font-size: .85em; background: #dde1e6; }
.badge.queued { background: #e4e7ec; } .badge.running { background: #cfe3ff; }
.badge.succeeded { background: #cdeccf; } .badge.failed, .badge.banned, .badge.expired { background: #f7cfcf; }
.badge.cancelled { background: #f0e2c4; }
.provider, .job-state { font-weight: normal; color: #667; font-size: .9em; }
.error { color: #a11; white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, monospace; font-size: .85em; }
.eta, .queue, .bytes, .note, .code { color: #667; font-size: .9em; }
a.thumb img { width: 64px; height: 64px; image-rendering: pixelated; border: 1px solid #ccd; vertical-align: middle; }
]]

-- The live part: polls /jobs every second and redraws #jobs with DOM calls only. Image
-- elements are kept across redraws (by URL), so a thumbnail loads once; each marks
-- data-loaded="1" when it has loaded (data-loaded="0" when it failed).
local SCRIPT = [==[
(function () {
  "use strict";
  var STATES = ["queued", "running", "succeeded", "failed", "cancelled", "banned", "expired", "unknown"];
  var jobsEl = document.getElementById("jobs");
  var summaryEl = document.getElementById("summary");
  var liveEl = document.getElementById("live");
  var images = {};
  document.documentElement.setAttribute("data-js", "on");

  function arr(x) { return Array.isArray(x) ? x : []; }
  function str(x) { return x === undefined || x === null ? "" : String(x); }
  function stateClass(s) { return STATES.indexOf(s) >= 0 ? s : "unknown"; }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, str(attrs[k])); });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function fmtEta(s) {
    if (typeof s !== "number") return null;
    s = Math.round(s);
    if (s < 60) return "ETA " + s + " s";
    var r = s % 60;
    return "ETA " + Math.floor(s / 60) + " min " + (r < 10 ? "0" : "") + r + " s";
  }
  function fmtBytes(n) {
    if (typeof n !== "number") return "";
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }
  function watchImage(img) {
    function loaded() { img.setAttribute("data-loaded", img.naturalWidth > 0 ? "1" : "0"); }
    if (img.complete) loaded();
    img.addEventListener("load", loaded);
    img.addEventListener("error", function () { img.setAttribute("data-loaded", "0"); });
  }
  function image(url, label) {
    var img = images[url];
    if (!img) {
      img = el("img", { alt: label, title: label, width: 64, height: 64 });
      watchImage(img);
      img.setAttribute("src", url);
      images[url] = img;
    }
    return img;
  }
  Array.prototype.forEach.call(jobsEl.querySelectorAll("a.thumb img"), function (img) {
    images[img.getAttribute("src")] = img;
    watchImage(img);
  });

  function progressCell(t) {
    var out = [];
    var s = t.state;
    if (s === "running") {
      var p = Math.max(0, Math.min(100, Math.floor(typeof t.progress === "number" ? t.progress : 0)));
      out.push(el("progress", { max: 100, value: p }, [p + " %"]), " ", el("span", { "class": "pct" }, [p + " %"]));
      var eta = fmtEta(t.eta);
      if (eta) out.push(" ", el("span", { "class": "eta" }, [eta]));
    } else if (s === "queued" && t.queue_position !== undefined && t.queue_position !== null) {
      out.push(el("span", { "class": "queue" }, ["position " + str(t.queue_position) + " in the queue"]));
    } else if (s === "succeeded") {
      out.push(el("progress", { max: 100, value: 100 }, ["100 %"]), " ", el("span", { "class": "pct" }, ["100 %"]));
    }
    return el("td", { "class": "progress" }, out);
  }
  function resultsCell(t) {
    var out = [];
    arr(t.files).forEach(function (f) {
      var url = str(f.url);
      if (url.indexOf("/files/") !== 0) return;
      var label = str(f.name || "file");
      if (f.image) {
        out.push(el("a", { "class": "thumb", href: url }, [image(url, label)]), " ");
      } else {
        out.push(el("a", { "class": "file", href: url, download: "" }, [label]), " ",
          el("span", { "class": "bytes" }, [fmtBytes(f.bytes)]), " ");
      }
    });
    if (t.downloading) out.push(el("span", { "class": "note" }, ["downloading\u2026"]), " ");
    if (t.error !== undefined && t.error !== null) {
      var kids = [str(t.error)];
      if (t.error_code !== undefined && t.error_code !== null) {
        kids.push(" ", el("span", { "class": "code" }, ["(code " + str(t.error_code) + ")"]));
      }
      out.push(el("div", { "class": "error" }, kids));
    }
    return el("td", { "class": "results" }, out);
  }
  function jobSection(j) {
    var rows = arr(j.tasks).map(function (t) {
      var c = stateClass(t.state);
      return el("tr", { "class": "task " + c, "data-task": t.id, "data-state": t.state }, [
        el("td", { "class": "id" }, [el("code", null, [str(t.id)])]),
        el("td", { "class": "type" }, [str(t.type)]),
        el("td", { "class": "state" }, [el("span", { "class": "badge " + c }, [str(t.state)])]),
        progressCell(t), resultsCell(t)]);
    });
    var head = el("tr", null, ["task", "type", "state", "progress", "results"].map(function (h) { return el("th", null, [h]); }));
    return el("section", { "class": "job", "data-job": j.job }, [
      el("h2", null, ["Job " + str(j.job) + " ", el("span", { "class": "provider" }, [str(j.provider)]), " ",
        el("span", { "class": "job-state" }, [str(j.state)])]),
      el("table", { "class": "tasks" }, [el("thead", null, [head]), el("tbody", null, rows)])]);
  }
  function summary(jobs) {
    var n = {}, total = 0;
    jobs.forEach(function (j) { arr(j.tasks).forEach(function (t) { var c = stateClass(t.state); n[c] = (n[c] || 0) + 1; total++; }); });
    var kids = [jobs.length + (jobs.length === 1 ? " job, " : " jobs, ") + total + (total === 1 ? " task " : " tasks ")];
    STATES.forEach(function (s) { if (n[s]) kids.push(el("span", { "class": "badge " + s }, [s + " " + n[s]]), " "); });
    return kids;
  }
  function render(data) {
    var jobs = arr(data && data.jobs);
    var sections = jobs.map(jobSection);
    if (sections.length === 0) sections = [el("p", { "class": "empty" }, ["No jobs yet: POST /jobs to start one."])];
    jobsEl.replaceChildren.apply(jobsEl, sections);
    jobsEl.setAttribute("data-rendered", "json");
    summaryEl.replaceChildren.apply(summaryEl, summary(jobs));
    liveEl.textContent = "live \u00b7 updated " + new Date().toLocaleTimeString();
  }
  function poll() {
    fetch("/jobs", { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(render)
      .catch(function (e) { liveEl.textContent = "offline (" + str(e && e.message) + "), retrying"; })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
]==]

--- The page for views (app.lua's job views, newest first). opts: nonce (of the CSP), now.
function M.render(views, opts)
  opts = opts or {}
  local nonce = esc(opts.nonce or "")
  local out = {
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<title>taskapi jobs</title>',
    '<noscript><meta http-equiv="refresh" content="5"></noscript>',
    '<style nonce="' .. nonce .. '">' .. STYLE .. '</style></head><body>',
    '<h1>taskapi jobs</h1>',
    '<p id="summary">' .. counts(views) .. '</p>',
    '<p id="live">rendered at ' .. os.date("!%H:%M:%S", math.floor(opts.now or os.time())) ..
      ' UTC; without JavaScript the page reloads every 5 s</p>',
    '<div id="jobs">',
  }
  if #views == 0 then out[#out + 1] = '<p class="empty">No jobs yet: POST /jobs to start one.</p>' end
  for _, j in ipairs(views) do out[#out + 1] = job_section(j) end
  out[#out + 1] = '</div>'
  out[#out + 1] = '<script nonce="' .. nonce .. '">' .. SCRIPT .. '</script>'
  out[#out + 1] = '</body></html>\n'
  return table.concat(out, "\n")
end

return M
