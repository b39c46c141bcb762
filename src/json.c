/* json.c: JSON decoding for taskapi.core through a PRIVATE lua-cjson instance
 * (cjson.new(); its decode kept in the registry), so the user's settings of the global cjson module
 * never change what we decode. On top of whatever cjson build is installed it guarantees:
 *  - integer literals beyond 2^53 (not exact as doubles) come out as strings of the same
 *    digits (a pre-scan in parse.c quotes them before decoding);
 *  - on Lua 5.3+, JSON has one number type, so every decoded number with an integral value
 *    that fits a lua_Integer becomes a Lua integer ({"progress":1} gives 1, never 1.0;
 *    1.0 and 1e3 in the text become integers too); other floats stay floats;
 *  - input over max_bytes is refused before decoding; malformed JSON and nesting deeper
 *    than 1000 give nil, err(kind="bad_response"), never a crash. */
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "json.h"
#include "parse.h"

/* Registry key (its address) of the private instance's decode function. */
static const char decode_key = 0;

void tk_json_open(lua_State *L)
{
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushstring(L, "cjson");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  if (!lua_isfunction(L, -1))
    luaL_error(L, "taskapi.core needs lua-cjson with cjson.new()");
  lua_call(L, 0, 1); /* private instance */
  lua_getfield(L, -1, "decode_max_depth");
  lua_pushinteger(L, TK_JSON_MAX_DEPTH);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "decode_invalid_numbers"); /* strict JSON: no NaN, Inf, hex */
  if (lua_isfunction(L, -1)) {
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
  } else {
    lua_pop(L, 1);
  }
  lua_getfield(L, -1, "decode");
  tk_registry_set(L, &decode_key);
  lua_getfield(L, -1, "null");
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

#if LUA_VERSION_NUM >= 503
/* Turns integral floats into integers in the decoded value at the top of the stack.
 * Recursive, bounded by cjson's depth limit (1000) plus a cap of our own. */
static void integerize(lua_State *L, int depth)
{
  if (depth > TK_JSON_MAX_DEPTH + 1) return;
  luaL_checkstack(L, 4, "json nesting");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int t = lua_type(L, -1);
    if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_Number d = lua_tonumber(L, -1);
      lua_Integer i;
      if (lua_numbertointeger(d, &i) && (lua_Number)i == d) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, i);
        lua_rawset(L, -5);
      }
    } else if (t == LUA_TTABLE) {
      integerize(L, depth + 1);
    }
    lua_pop(L, 1);
  }
}
#endif

int tk_json_decode_buf(lua_State *L, const char *s, size_t len, size_t max_bytes)
{
  size_t nbig;
  if (max_bytes && len > max_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg, "JSON body larger than %lu bytes", (unsigned long)max_bytes);
    return tk_fail(L, "bad_response", msg, -1, -1, 0);
  }
  tk_registry_get(L, &decode_key);
  nbig = tk_json_bigint_count(s, len);
  if (nbig == 0) {
    lua_pushlstring(L, s, len);
  } else {
    size_t cap = len + 2 * nbig, n;
    char *tmp = (char *)lua_newuserdata(L, cap); /* GC-owned scratch buffer */
    n = tk_json_bigint_rewrite(s, len, tmp, cap);
    lua_pushlstring(L, tmp, n);
    lua_remove(L, -2);
  }
  if (lua_pcall(L, 1, 1, 0) != 0) {
    char msg[300];
    const char *e = lua_tostring(L, -1);
    snprintf(msg, sizeof msg, "malformed JSON: %s", e ? e : "decode error");
    lua_pop(L, 1);
    return tk_fail(L, "bad_response", msg, -1, -1, 0);
  }
#if LUA_VERSION_NUM >= 503
  if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
    lua_Number d = lua_tonumber(L, -1);
    lua_Integer i;
    if (lua_numbertointeger(d, &i) && (lua_Number)i == d) {
      lua_pop(L, 1);
      lua_pushinteger(L, i);
    }
  } else if (lua_istable(L, -1)) {
    integerize(L, 1);
  }
#endif
  return 1;
}

int tk_json_decode(lua_State *L)
{
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Number max = luaL_optnumber(L, 2, (lua_Number)TK_JSON_MAX_BYTES);
  if (max < 0) max = 0;
  return tk_json_decode_buf(L, s, len, (size_t)max);
}
