-- taskapi.fake.model: one pure-Lua model of the SellerPic and Tripo3D task APIs, gathered
-- from its parts (one concern a file, each names what it owns at its top):
--   base (shared helpers), store (state, keys, tasks, log, stats), clock, faults (the one
--   FAULT_TABLE and the model's side of it), files (result files, links, the file host),
--   multipart, storage (presigned uploads), tripo_task (the Tripo task both Tripo APIs
--   read), tripo (V3), tripo_v2, sellerpic, control (/_fake/...), router (a request to its
--   answer).
--
-- Host-agnostic: a host turns its requests into
--   req  = {method=, path= (decoded, no query), query = {k = v}, headers = {lower-case = value},
--           body = string, base_url = ? (overrides the model's for links in this answer),
--           connection = ? (the host's connection number, for the log)}
-- and serves what m:handle(req) answers:
--   resp = {status=, headers = {Name = value}, body = string, delay = seconds?, reset = true?}
--   or, for result files,
--   resp = {status=, headers=, file = path, offset=, length=, plain = true when no fault
--           applies, drop_after = bytes?, lie_length = true?, stall = seconds?, stall_after = bytes?,
--           head = true for HEAD}
-- The answer fields a host plays are FAULT_TABLE's (a host checks them at load: check_host).
-- See doc/internals.md ("The fake provider's model") and the task spec (Model:add_task).
local base = require "taskapi.fake.model.base"
local store = require "taskapi.fake.model.store"
local clock = require "taskapi.fake.model.clock"
local faults = require "taskapi.fake.model.faults"
local files = require "taskapi.fake.model.files"
local multipart = require "taskapi.fake.model.multipart"
local storage = require "taskapi.fake.model.storage"
local tripo_task = require "taskapi.fake.model.tripo_task"
local tripo = require "taskapi.fake.model.tripo"
local tripo_v2 = require "taskapi.fake.model.tripo_v2"
local sellerpic = require "taskapi.fake.model.sellerpic"
local control = require "taskapi.fake.model.control"
local router = require "taskapi.fake.model.router"

local M = {}

local Model = {}
Model.__index = Model
for _, part in ipairs({ store, clock, faults, files, multipart, storage, tripo_task, tripo, tripo_v2, sellerpic,
  control, router }) do
  for name, fn in pairs(part.Model) do
    if Model[name] then error("taskapi.fake.model: two parts define Model:" .. name) end
    Model[name] = fn
  end
end
-- The provider APIs the router serves (by path prefix) and the task kinds add_task makes.
Model.APIS = { tripo.API, tripo_v2.API, sellerpic.API }
Model.TASK_KINDS = { tripo = tripo_task.TASK, sellerpic = sellerpic.TASK }
M.Model = Model

-- The path prefixes of the APIs (a client's base URL is the fake's URL and one of them).
M.TRIPO_PREFIX = tripo_v2.PREFIX
M.TRIPO_V2_PREFIX = tripo_v2.PREFIX
M.TRIPO_V3_PREFIX = tripo.PREFIX
M.SELLERPIC_PREFIX = sellerpic.PREFIX

M.V3_CREATES = tripo.V3_CREATES
M.V3_NEED_MODEL = tripo.V3_NEED_MODEL
M.V3_FILE_FORMATS = tripo.V3_FILE_FORMATS
M.V3_OUTPUT_KEY = tripo.V3_OUTPUT_KEY
M.TRIPO_KIND = tripo_task.TRIPO_KIND
M.TRIPO_FINAL = tripo_task.TRIPO_FINAL
M.LIST_MAX = tripo_task.LIST_MAX
M.DEFAULT_KEYS = store.DEFAULT_KEYS
M.CREATE_APIS = store.CREATE_APIS
M.key_owners = store.key_owners
M.FAULT_TABLE = faults.FAULT_TABLE
M.FAULTS = faults.FAULTS
M.REQUEST_FAULTS = faults.REQUEST_FAULTS
M.check_host = faults.check_host
M.CONTENT_TYPES = files.CONTENT_TYPES
M.generate_file = files.generate_file
M.file_bytes = files.file_bytes
M.record_bytes = files.record_bytes
M.parse_range = files.parse_range
M.multipart_parts = multipart.multipart_parts
M.multipart_file = multipart.multipart_file
M.adler32 = multipart.adler32
M.decode_json = base.decode_json
M.http_date = base.http_date
M.iso8601 = base.iso8601

--- opts: clock (function -> seconds; default os.time), files_dir (where result files are made;
--- a new temporary folder when nil), base_url (prefix of file links; "http://fake.invalid"),
--- keys (more valid API keys besides M.DEFAULT_KEYS: a list, a set, or {key = "owner"}),
--- link_ttl (seconds a file link lives; 300), balance (Tripo balance; 3000 in V2, 2987.5 in V3
--- when not given), sellerpic_total (SellerPic credits; 1000), and for Tripo V3:
--- v3_statuses (5: queued running success failed cancelled, banned and expired as failed with
--- error_code 2008 / 2018; or 8: the V2 list), v3_eta (false: no queuing_num nor
--- running_left_time; default true: each when known), list_shape ("array", the default:
--- POST /tasks/list answers tasks = [task, ...] in request order, as Tripo's JS, Go and Rust
--- SDKs read it; "map": tasks = {id = task}, as one migration guide shows it),
--- credits (credits_consumed of a V3 success; 12.5), presign_ttl (seconds an upload_url
--- lives; 900).
function M.new(opts)
  return setmetatable({}, Model):init(opts or {})
end

return M
