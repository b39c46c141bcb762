/* sqlite.c: a small binding of the system's SQLite (Debian's libsqlite3) for the task
 * ledger (lua/taskapi/ledger.lua). Knows no schema and no provider.
 *
 *   core.sqlite_open(path [, busy_ms]) -> db | nil, err      (created if missing)
 *   db:exec(sql)                       -> true | nil, err    (any number of statements)
 *   db:query(sql, ...)                 -> rows | nil, err    (one statement; ... bound to
 *                                         ?1, ?2, ...: nil, boolean (0/1), number, string)
 *   db:changes()                       -> rows changed by the last statement
 *   db:close()                         -> true               (also __gc and __close)
 *   core.file_stat(path)               -> size, mtime, abs | nil  (a regular file, not a
 *                                         symlink; mtime in seconds with nanoseconds, abs its
 *                                         absolute path: what the ledger records of a saved
 *                                         file, and compares when it has no SHA-256)
 *
 * rows is an array of tables keyed by column name (a NULL column is absent); integers come
 * back as Lua integers on 5.4 (numbers on LuaJIT, exact below 2^53), text and blobs as
 * strings. Errors are {kind = "io", message = "sqlite: ...", code = <extended result code>,
 * retryable = true for SQLITE_BUSY / SQLITE_LOCKED}.
 *
 * Ownership: the sqlite3 connection and the one statement being run belong to the db
 * userdata. A statement lives only inside one query call; should a Lua error (out of memory
 * while building the rows) leave it behind, the next query or the close finalizes it. One
 * idempotent close serves close, __gc and __close. The busy timeout makes a writer wait for
 * another process's transaction (WAL mode is set by the Lua layer) instead of failing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "errors.h"
#include "sqlite.h"

#define TK_SQLITE_MT "taskapi.core.sqlite"

typedef struct {
  sqlite3 *db;
  sqlite3_stmt *stmt; /* the statement of the query running (or left by a Lua error) */
} tk_sqlite;

static tk_sqlite *check_db(lua_State *L)
{
  tk_sqlite *s = (tk_sqlite *)luaL_checkudata(L, 1, TK_SQLITE_MT);
  if (!s->db) luaL_error(L, "taskapi.core: sqlite database is closed");
  return s;
}

/* Pushes nil and the error of the connection (or of rc when there is no connection). */
static int fail_sqlite(lua_State *L, sqlite3 *db, int rc, const char *what)
{
  char msg[512];
  int code = db ? sqlite3_extended_errcode(db) : rc;
  snprintf(msg, sizeof msg, "sqlite: %s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  lua_pushnil(L);
  tk_push_error(L, "io", msg, -1, -1,
                (code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED);
  tk_pushint(L, code);
  lua_setfield(L, -2, "code");
  return 2;
}

static void finalize_pending(tk_sqlite *s)
{
  if (s->stmt) {
    sqlite3_finalize(s->stmt);
    s->stmt = NULL;
  }
}

static int l_open(lua_State *L)
{
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  lua_Number busy = luaL_optnumber(L, 2, 5000);
  tk_sqlite *s;
  int rc;
  if (len == 0 || strlen(path) != len) return tk_fail_arg(L, "sqlite_open: the path is empty or holds a NUL byte");
  if (!(busy >= 0 && busy <= 3600000)) return tk_fail_arg(L, "sqlite_open: busy_ms must be 0 to 3600000");
  s = (tk_sqlite *)lua_newuserdata(L, sizeof *s);
  s->db = NULL;
  s->stmt = NULL;
  luaL_getmetatable(L, TK_SQLITE_MT); /* luaL_setmetatable is 5.2+ (plain 5.1 lacks it) */
  lua_setmetatable(L, -2);
  rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL);
  if (rc != SQLITE_OK) {
    int r = fail_sqlite(L, s->db, rc, path);
    sqlite3_close_v2(s->db); /* a failed open still returns a handle to release */
    s->db = NULL;
    return r;
  }
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, (int)busy);
  return 1;
}

static int l_exec(lua_State *L)
{
  tk_sqlite *s = check_db(L);
  const char *sql = luaL_checkstring(L, 2);
  int rc;
  finalize_pending(s);
  rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK) return fail_sqlite(L, s->db, rc, "exec");
  lua_pushboolean(L, 1);
  return 1;
}

static int bind_arg(lua_State *L, sqlite3_stmt *st, int col, int idx)
{
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
  case LUA_TNONE: return sqlite3_bind_null(st, col);
  case LUA_TBOOLEAN: return sqlite3_bind_int(st, col, lua_toboolean(L, idx));
  case LUA_TNUMBER: {
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) return sqlite3_bind_int64(st, col, (sqlite3_int64)lua_tointeger(L, idx));
#endif
    {
      lua_Number n = lua_tonumber(L, idx);
      if (n == floor(n) && fabs(n) < 9007199254740992.0) return sqlite3_bind_int64(st, col, (sqlite3_int64)n);
      return sqlite3_bind_double(st, col, (double)n);
    }
  }
  case LUA_TSTRING: {
    size_t len;
    const char *v = lua_tolstring(L, idx, &len);
    return sqlite3_bind_text(st, col, v, (int)len, SQLITE_TRANSIENT);
  }
  default: return -1;
  }
}

static void push_column(lua_State *L, sqlite3_stmt *st, int i)
{
  switch (sqlite3_column_type(st, i)) {
  case SQLITE_INTEGER: tk_pushint(L, sqlite3_column_int64(st, i)); break;
  case SQLITE_FLOAT: lua_pushnumber(L, (lua_Number)sqlite3_column_double(st, i)); break;
  case SQLITE_BLOB: {
    const void *b = sqlite3_column_blob(st, i);
    lua_pushlstring(L, b ? (const char *)b : "", (size_t)sqlite3_column_bytes(st, i));
    break;
  }
  default: { /* SQLITE_TEXT */
    const unsigned char *t = sqlite3_column_text(st, i);
    lua_pushlstring(L, t ? (const char *)t : "", (size_t)sqlite3_column_bytes(st, i));
  }
  }
}

static int l_query(lua_State *L)
{
  tk_sqlite *s = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  const char *tail = NULL;
  int nargs = lua_gettop(L) - 2, i, rc, ncol, n = 0;
  if (len > 1000000) return tk_fail_arg(L, "sqlite query of %lu bytes (at most 1000000)", (unsigned long)len);
  finalize_pending(s);
  rc = sqlite3_prepare_v2(s->db, sql, (int)len, &s->stmt, &tail);
  if (rc != SQLITE_OK) return fail_sqlite(L, s->db, rc, "prepare");
  if (!s->stmt) { /* only white space or comments */
    lua_newtable(L);
    return 1;
  }
  if (tail && strspn(tail, " \t\r\n;") != strlen(tail)) {
    finalize_pending(s);
    return tk_fail_arg(L, "sqlite query: one statement at a time (use exec for several)");
  }
  if (nargs != sqlite3_bind_parameter_count(s->stmt)) {
    int want = sqlite3_bind_parameter_count(s->stmt);
    finalize_pending(s);
    return tk_fail_arg(L, "sqlite query: %d values for %d parameters", nargs, want);
  }
  for (i = 1; i <= nargs; i++) {
    rc = bind_arg(L, s->stmt, i, i + 2);
    if (rc == -1) {
      const char *t = luaL_typename(L, i + 2);
      finalize_pending(s);
      return tk_fail_arg(L, "sqlite query: value %d is a %s (nil, boolean, number or string)", i, t);
    }
    if (rc != SQLITE_OK) {
      int r = fail_sqlite(L, s->db, rc, "bind");
      finalize_pending(s);
      return r;
    }
  }
  ncol = sqlite3_column_count(s->stmt);
  lua_newtable(L);
  while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {
    lua_createtable(L, 0, ncol);
    for (i = 0; i < ncol; i++) {
      if (sqlite3_column_type(s->stmt, i) == SQLITE_NULL) continue;
      push_column(L, s->stmt, i);
      lua_setfield(L, -2, sqlite3_column_name(s->stmt, i));
    }
    lua_rawseti(L, -2, ++n);
  }
  if (rc != SQLITE_DONE) {
    int r = fail_sqlite(L, s->db, rc, "step");
    finalize_pending(s);
    return r;
  }
  finalize_pending(s);
  return 1;
}

static int l_changes(lua_State *L)
{
  tk_sqlite *s = check_db(L);
  tk_pushint(L, sqlite3_changes(s->db));
  return 1;
}

/* The one idempotent close: close, __gc and __close. */
static int l_close(lua_State *L)
{
  tk_sqlite *s = (tk_sqlite *)luaL_checkudata(L, 1, TK_SQLITE_MT);
  finalize_pending(s);
  if (s->db) {
    sqlite3_close_v2(s->db);
    s->db = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tostring(lua_State *L)
{
  tk_sqlite *s = (tk_sqlite *)luaL_checkudata(L, 1, TK_SQLITE_MT);
  if (s->db) {
    const char *f = sqlite3_db_filename(s->db, "main");
    lua_pushfstring(L, "taskapi.core.sqlite (%s)", f ? f : "?");
  } else {
    lua_pushliteral(L, "taskapi.core.sqlite (closed)");
  }
  return 1;
}

static int l_file_stat(lua_State *L)
{
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  struct stat st;
  if (len == 0 || strlen(path) != len) return 0;
  if (fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
    lua_pushnil(L);
    return 1;
  }
  tk_pushint(L, st.st_size);
  lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
  {
    char *abs = realpath(path, NULL); /* malloc'd by libc, freed here */
    if (abs) {
      lua_pushstring(L, abs);
      free(abs);
    } else {
      lua_pushnil(L);
    }
  }
  return 3;
}

static const luaL_Reg db_methods[] = {
  {"exec", l_exec}, {"query", l_query}, {"changes", l_changes}, {"close", l_close}, {NULL, NULL}};

void tk_sqlite_open(lua_State *L)
{
  tk_new_class(L, TK_SQLITE_MT, db_methods, l_close, l_tostring);
  lua_pushcfunction(L, l_open);
  lua_setfield(L, -2, "sqlite_open");
  lua_pushcfunction(L, l_file_stat);
  lua_setfield(L, -2, "file_stat");
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "sqlite_version");
}
