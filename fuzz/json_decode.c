/* The JSON decoder of taskapi.core (src/json.c) on arbitrary bytes, in an embedded Lua 5.4
 * state: tk_json_decode_buf, the C path a response body takes, reads an exact-size heap copy
 * (ASan sees any read past its end). Any input must give a value or nil, err (kind
 * bad_response), never a Lua error; and a value core accepts is one lua-cjson (a private
 * instance: strict numbers, depth 1000) accepts too, equal to it but for core's documented
 * differences: integer literals beyond 2^53 kept as strings of their digits, integral
 * numbers as Lua integers, zero as +0: spec/support/json_same.lua's check, the one of
 * spec/core_json_diff_spec.lua (fuzz/run.sh runs from the repository's root). */
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fuzz_parse.h"
#include "json.h"

int luaopen_taskapi_core(lua_State *L);

static lua_State *L;
static int same_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc; (void)argv;
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "taskapi.core", luaopen_taskapi_core, 0);
  lua_settop(L, 0);
  if (luaL_dofile(L, "spec/support/json_same.lua") != LUA_OK) {
    fprintf(stderr, "json_decode: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_getfield(L, -1, "check");
  same_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return 0;
}

static int count;

static int decode(lua_State *S)
{
  const char *s = (const char *)lua_touserdata(S, 1);
  size_t len = (size_t)lua_tointeger(S, 2);
  lua_settop(S, 0);
  return tk_json_decode_buf(S, s, len, TK_JSON_MAX_BYTES);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *s = tk_fuzz_copy(data, size);
  int r;
  lua_pushcfunction(L, decode);
  lua_pushlightuserdata(L, s);
  lua_pushinteger(L, (lua_Integer)size);
  r = lua_pcall(L, 2, 2, 0);
  TK_FUZZ_CHECK(r == LUA_OK); /* never a Lua error, only nil, err */
  if (lua_isnil(L, -2)) {
    TK_FUZZ_CHECK(lua_istable(L, -1));
    lua_getfield(L, -1, "kind");
    TK_FUZZ_CHECK(lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "bad_response") == 0);
  } else {
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, same_ref);
    lua_insert(L, -2);
    lua_pushlstring(L, (const char *)data, size);
    r = lua_pcall(L, 2, 2, 0);
    if (r != LUA_OK || !lua_toboolean(L, -2))
      fprintf(stderr, "json_decode: differs from cjson: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "values differ");
    TK_FUZZ_CHECK(r == LUA_OK && lua_toboolean(L, -2));
  }
  lua_settop(L, 0);
  free(s);
  if (++count % 256 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
