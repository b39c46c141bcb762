/* errors.c: builds the error tables returned by every failing taskapi.core call and
 * applies the Lua layer's error metatable, which lives in the registry once set. The caller
 * owns every message buffer it passes; the text is copied into the table at once. */
#include <stdarg.h>
#include <stdio.h>

#include "errors.h"

/* Registry key (its address) of the metatable core.set_error_metatable installs. */
static const char error_mt_key = 0;

void tk_push_error(lua_State *L, const char *kind, const char *message, long status,
                   long curl_code, int retryable)
{
  lua_createtable(L, 0, 6);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, message ? message : kind);
  lua_setfield(L, -2, "message");
  if (status >= 0) {
    tk_pushint(L, status);
    lua_setfield(L, -2, "status");
  }
  if (curl_code >= 0) {
    tk_pushint(L, curl_code);
    lua_setfield(L, -2, "curl_code");
  }
  if (retryable >= 0) {
    lua_pushboolean(L, retryable);
    lua_setfield(L, -2, "retryable");
  }
  tk_registry_get(L, &error_mt_key);
  if (lua_istable(L, -1))
    lua_setmetatable(L, -2);
  else
    lua_pop(L, 1);
}

int tk_fail(lua_State *L, const char *kind, const char *message, long status,
            long curl_code, int retryable)
{
  lua_pushnil(L);
  tk_push_error(L, kind, message, status, curl_code, retryable);
  return 2;
}

int tk_fail_arg(lua_State *L, const char *fmt, ...)
{
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return tk_fail(L, "invalid_argument", msg, -1, -1, 0);
}

int tk_set_error_metatable(lua_State *L)
{
  if (!lua_isnoneornil(L, 1))
    luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  tk_registry_set(L, &error_mt_key);
  return 0;
}
