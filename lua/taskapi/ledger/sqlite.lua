-- taskapi.ledger.sqlite: the ledger in a SQLite database (Debian's libsqlite3 through
-- taskapi.core's sqlite.c) in WAL mode with a busy timeout, so several processes (and nginx
-- workers) share one file. Each write is one committed transaction (BEGIN IMMEDIATE). The
-- schema's version is PRAGMA user_version. The observer and reading methods are
-- taskapi.ledger's; this file gives them the store's primitives (see taskapi.ledger).
local core = require "taskapi.core"
local errors = require "taskapi.errors"
local ledger = require "taskapi.ledger"

local db_err = ledger.db_err

local M = {}

local SCHEMA_SQL = [[
CREATE TABLE IF NOT EXISTS intents (
  rid TEXT PRIMARY KEY,            -- request id, made by the ledger
  provider TEXT NOT NULL,
  type TEXT NOT NULL,              -- the task type as given to create
  endpoint TEXT,                   -- the provider's create path
  digest TEXT NOT NULL,            -- of the parameters: sha256:<hex> or fnv1a:<hex>
  at INTEGER NOT NULL,             -- Unix seconds, before the request
  outcome TEXT,                    -- NULL (open: no answer recorded), created, refused,
                                   -- indeterminate, reconciled
  task_id TEXT,
  error TEXT,
  settled_at INTEGER,
  seq INTEGER,                     -- the intent's event (the ledger's order of things)
  settled_seq INTEGER              -- its outcome's event
);
CREATE INDEX IF NOT EXISTS intents_by_outcome ON intents (provider, outcome);
CREATE TABLE IF NOT EXISTS tasks (
  provider TEXT NOT NULL,
  id TEXT NOT NULL,
  type TEXT,
  state TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0,
  ok INTEGER NOT NULL DEFAULT 0,
  progress INTEGER,
  rid TEXT,                        -- the intent that made it (NULL: only waited on)
  task TEXT,                       -- compact JSON: outputs (names, urls), error, times, credits
  first_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (provider, id)
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  provider TEXT NOT NULL,
  task_id TEXT NOT NULL,           -- for an intent's own events (intent, refused,
                                   -- indeterminate): its request id
  state TEXT NOT NULL,
  progress INTEGER,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
  provider TEXT NOT NULL,
  task_id TEXT NOT NULL,
  name TEXT NOT NULL,              -- the output's name
  path TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  sha256 TEXT,                     -- when taskapi.core has sha256_file
  mtime REAL,                      -- the file's mtime when saved
  saves INTEGER NOT NULL DEFAULT 1,-- times a download saved it (resume skips a complete one)
  adopted INTEGER NOT NULL DEFAULT 0, -- found complete on disk by resume, unrecorded
  at INTEGER NOT NULL,
  PRIMARY KEY (provider, task_id, name)
);
]]

local Store = ledger.class()
M.Store = Store
ledger.register(Store)

--- Runs fn(db) inside BEGIN IMMEDIATE ... COMMIT; fn returns a value or nil, err.
function Store:_tx(what, fn)
  local db = self.db
  if not db then return ledger.closed(what) end
  local ok, err = db:exec("BEGIN IMMEDIATE")
  if not ok then return nil, db_err(err, what) end
  local pok, r, e = pcall(fn, db)
  if not pok or r == nil then
    db:exec("ROLLBACK")
    if not pok then return nil, db_err(r, what) end
    return nil, db_err(e, what)
  end
  ok, err = db:exec("COMMIT")
  if not ok then
    db:exec("ROLLBACK")
    return nil, db_err(err, what)
  end
  return r
end

local function q(db, sql, ...)
  local rows, err = db:query(sql, ...)
  if not rows then error(err, 0) end
  return rows
end

--- open(path, opts) -> ledger | nil, err. opts: busy_timeout (seconds; 5), synchronous
--- ("full", the default: a commit survives a power cut; "normal": a process crash only).
function M.open(path, opts)
  local ok, err = ledger.check_keys("ledger", opts, { busy_timeout = true, synchronous = true })
  if not ok then return nil, err end
  local busy = opts.busy_timeout or ledger.BUSY_TIMEOUT
  if type(busy) ~= "number" or busy ~= busy or busy < 0 or busy > 3600 then
    return errors.invalid("ledger: 'busy_timeout' must be 0 to 3600 seconds")
  end
  local sync = opts.synchronous or "full"
  if sync ~= "full" and sync ~= "normal" then return errors.invalid("ledger: 'synchronous' must be \"full\" or \"normal\"") end
  local db
  db, err = core.sqlite_open(path, busy * 1000)
  if not db then return nil, db_err(err, "cannot open '" .. path:sub(1, 200) .. "'") end
  local L = setmetatable({ db = db, path = path, seen = {} }, Store)
  local function fail(e, what)
    db:close()
    L.db = nil
    return nil, db_err(e, what)
  end
  -- Switching a new file to WAL needs the file to itself: while another process (or nginx
  -- worker) opens it at the same moment, SQLite answers busy or returns the old mode without
  -- waiting, so the switch is tried again until the busy timeout.
  local rows
  local deadline = core.now() + busy
  while true do
    rows, err = db:query("PRAGMA journal_mode = WAL")
    if rows and rows[1] and rows[1].journal_mode == "wal" then break end
    if core.now() >= deadline or (not rows and not err.retryable) then
      if not rows then return fail(err, "journal_mode") end
      return fail("the database refused WAL mode (journal_mode " .. tostring(rows[1] and rows[1].journal_mode) .. ")",
        "journal_mode")
    end
    core.sleep(0.01)
  end
  ok, err = db:exec("PRAGMA synchronous = " .. (sync == "full" and "FULL" or "NORMAL"))
  if not ok then return fail(err, "synchronous") end
  rows, err = db:query("PRAGMA user_version")
  if not rows then return fail(err, "user_version") end
  local v = rows[1] and rows[1].user_version or 0
  if v > ledger.SCHEMA then
    return fail("schema version " .. v .. " is newer than this taskapi's (" .. ledger.SCHEMA .. ")", "'" .. path:sub(1, 200) .. "'")
  end
  if v < ledger.SCHEMA then
    local _, serr = L:_tx("schema", function(d)
      local r = q(d, "PRAGMA user_version")
      if (r[1] and r[1].user_version or 0) < ledger.SCHEMA then -- another process may have won
        local okx, xerr = d:exec(SCHEMA_SQL .. "PRAGMA user_version = " .. ledger.SCHEMA .. ";")
        if not okx then error(xerr, 0) end
      end
      return true
    end)
    if serr then return fail(serr, "schema") end
  end
  return L
end

----------------------------------------------------------------------------------------------
-- writes

function Store:_intent(rid, provider, typ, endpoint, digest, t)
  return self:_tx("intent", function(db)
    q(db, "INSERT INTO events (provider, task_id, state, at) VALUES (?1, ?2, 'intent', ?3)", provider, rid, t)
    q(db, "INSERT INTO intents (rid, provider, type, endpoint, digest, at, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, " ..
      "last_insert_rowid())", rid, provider, typ, endpoint, digest, t)
    return true
  end)
end

function Store:_outcome(rid, provider, typ, id, outcome, message, t)
  return self:_tx("outcome", function(db)
    if id then
      q(db, "INSERT INTO events (provider, task_id, state, at) VALUES (?1, ?2, 'created', ?3)", provider, id, t)
      q(db, "UPDATE intents SET outcome = 'created', task_id = ?2, settled_at = ?3, settled_seq = last_insert_rowid() " ..
        "WHERE rid = ?1", rid, id, t)
      q(db, "INSERT INTO tasks (provider, id, type, state, rid, first_at, updated_at) VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5) " ..
        "ON CONFLICT (provider, id) DO UPDATE SET rid = excluded.rid", provider, id, typ, rid, t)
    else
      q(db, "INSERT INTO events (provider, task_id, state, at) VALUES (?1, ?2, ?3, ?4)", provider, rid, outcome, t)
      q(db, "UPDATE intents SET outcome = ?2, error = ?3, settled_at = ?4, settled_seq = last_insert_rowid() " ..
        "WHERE rid = ?1", rid, outcome, message, t)
    end
    return true
  end)
end

function Store:_task(task, text, t)
  return self:_tx("task state", function(db)
    q(db, "INSERT INTO tasks (provider, id, type, state, done, ok, progress, task, first_at, updated_at) " ..
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) ON CONFLICT (provider, id) DO UPDATE SET " ..
      "type = coalesce(excluded.type, tasks.type), state = excluded.state, done = excluded.done, ok = excluded.ok, " ..
      "progress = excluded.progress, task = excluded.task, updated_at = excluded.updated_at " ..
      "WHERE tasks.state IS NOT excluded.state OR tasks.done IS NOT excluded.done OR tasks.task IS NULL",
      task.provider, task.id, task.type, task.state, task.done and 1 or 0, task.ok and 1 or 0, task.progress, text, t)
    if db:changes() > 0 then
      q(db, "INSERT INTO events (provider, task_id, state, progress, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        task.provider, task.id, task.state, task.progress, t)
    end
    return true
  end)
end

function Store:_file(task, name, path, bytes, sha, mtime, adopted, t)
  return self:_tx("file", function(db)
    q(db, "INSERT INTO files (provider, task_id, name, path, bytes, sha256, mtime, adopted, at) " ..
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (provider, task_id, name) DO UPDATE SET " ..
      "path = excluded.path, bytes = excluded.bytes, sha256 = excluded.sha256, mtime = excluded.mtime, " ..
      "saves = files.saves + (1 - excluded.adopted), at = excluded.at",
      task.provider, task.id, name, path, bytes, sha, mtime, adopted, t)
    return true
  end)
end

function Store:_reconciled(rid, provider, id, typ, t)
  local exists = false
  local ok, err = self:_tx("reconcile", function(db)
    local have = q(db, "SELECT id FROM tasks WHERE provider = ?1 AND id = ?2", provider, id)
    if have[1] then
      exists = true
      return nil, "exists"
    end
    q(db, "UPDATE intents SET outcome = 'reconciled', task_id = ?2, settled_at = ?3 WHERE rid = ?1", rid, id, t)
    q(db, "INSERT INTO tasks (provider, id, type, state, rid, first_at, updated_at) VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5)",
      provider, id, typ, rid, t)
    q(db, "INSERT INTO events (provider, task_id, state, at) VALUES (?1, ?2, 'reconciled', ?3)", provider, id, t)
    return true
  end)
  if exists then return false end
  return ok, err
end

----------------------------------------------------------------------------------------------
-- reads

function Store:_rows(what, sql, ...)
  local rows, err = self.db:query(sql, ...)
  if not rows then return nil, db_err(err, what) end
  return rows
end

function Store:files(id, provider)
  if not self.db then return ledger.closed("files") end
  if provider then
    return self:_rows("files", "SELECT * FROM files WHERE task_id = ?1 AND provider = ?2 ORDER BY name", id, provider)
  end
  return self:_rows("files", "SELECT * FROM files WHERE task_id = ?1 ORDER BY provider, name", id)
end

function Store:_task_rows(provider)
  local rows, err
  if provider then
    rows, err = self:_rows("tasks", "SELECT * FROM tasks WHERE provider = ?1 ORDER BY first_at, rowid", provider)
  else
    rows, err = self:_rows("tasks", "SELECT * FROM tasks ORDER BY first_at, rowid")
  end
  if not rows then return nil, err end
  local files = {}
  for i, row in ipairs(rows) do files[i] = self:files(row.id, row.provider) or {} end
  return rows, files
end

function Store:_task_row(id, provider)
  local rows, err
  if provider then
    rows, err = self:_rows("get", "SELECT * FROM tasks WHERE id = ?1 AND provider = ?2", id, provider)
  else
    rows, err = self:_rows("get", "SELECT * FROM tasks WHERE id = ?1 ORDER BY first_at, rowid LIMIT 1", id)
  end
  if not rows then return nil, err end
  if not rows[1] then return nil end
  return rows[1], self:files(rows[1].id, rows[1].provider) or {}
end

function Store:_intent_rows()
  return self:_rows("intents", "SELECT * FROM intents ORDER BY at, rowid")
end

function Store:_event_rows()
  return self:_rows("events", "SELECT * FROM events ORDER BY seq")
end

--- The ids of provider's tasks in the ledger, as a set.
function Store:ids(provider)
  if not self.db then return ledger.closed("ids") end
  local rows, err = self:_rows("ids", "SELECT id FROM tasks WHERE provider = ?1", provider)
  if not rows then return nil, err end
  local set = {}
  for _, r in ipairs(rows) do set[r.id] = true end
  return set
end

return M
