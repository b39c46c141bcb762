/* The whole JSON decode path of a response body: core.json_decode through an embedded
 * Lua 5.4 state that loaded lua-cjson (the module's private instance), i.e. the size
 * check, the big-integer pre-scan and rewrite, cjson's decoder with its depth limit, and
 * the integer walk over the result. Any input must give a value or nil, err. */
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fuzz_parse.h"

int luaopen_taskapi_core(lua_State *L);

static lua_State *L;
static int decode_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc; (void)argv;
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "taskapi.core", luaopen_taskapi_core, 0);
  lua_getfield(L, -1, "json_decode");
  decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return 0;
}

static int count;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int r;
  lua_rawgeti(L, LUA_REGISTRYINDEX, decode_ref);
  lua_pushlstring(L, (const char *)data, size);
  r = lua_pcall(L, 1, 2, 0);
  TK_FUZZ_CHECK(r == LUA_OK); /* never a Lua error, only nil, err */
  if (lua_isnil(L, -2)) {
    TK_FUZZ_CHECK(lua_istable(L, -1));
    lua_getfield(L, -1, "kind");
    TK_FUZZ_CHECK(lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "bad_response") == 0);
  }
  lua_settop(L, 0);
  if (++count % 256 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
