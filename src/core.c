/* core.c: luaopen_taskapi_core, the module table of taskapi.core: version, curl_version,
 * null, set_error_metatable, json_decode, the parse_* helpers, the multi constructor, and
 * now/sleep (clock.c); each other file adds its own functions through its *_open
 * (transport, crypto, download, sqlite, redis, json).
 * curl_global_init runs once per process; its static flag is the only C global.
 * The module pins itself in memory (RTLD_NODELETE): lua_close would otherwise dlclose it
 * and, with it, libcurl and OpenSSL while their global state (and atexit handlers) live. */
#include <dlfcn.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "clock.h"
#include "compat.h"
#include "crypto.h"
#include "errors.h"
#include "json.h"
#include "parse.h"
#include "redis.h"
#include "sqlite.h"
#include "download.h"
#include "transport.h"

static int tk_global_ready = 0;

static int l_parse_retry_after(lua_State *L)
{
  size_t len;
  const char *v = lua_tolstring(L, 1, &len);
  time_t now = lua_isnoneornil(L, 2) ? time(NULL) : (time_t)luaL_checknumber(L, 2);
  long r;
  if (!v) { lua_pushnil(L); return 1; }
  r = tk_parse_retry_after(v, len, now);
  if (r < 0) lua_pushnil(L);
  else tk_pushint(L, r);
  return 1;
}

/* Runs a header parser that writes a string into a buffer; pushes it, or nil. */
typedef int (*tk_string_parser)(const char *v, size_t len, char *out, size_t cap);

static int push_parsed(lua_State *L, tk_string_parser parse)
{
  size_t len;
  const char *v = lua_tolstring(L, 1, &len);
  char out[256];
  if (v && parse(v, len, out, sizeof out) > 0) lua_pushstring(L, out);
  else lua_pushnil(L);
  return 1;
}

static int l_parse_content_type(lua_State *L) { return push_parsed(L, tk_parse_content_type); }
static int l_parse_content_disposition(lua_State *L) { return push_parsed(L, tk_parse_content_disposition); }

static const luaL_Reg core_funcs[] = {
  {"set_error_metatable", tk_set_error_metatable},
  {"json_decode", tk_json_decode},
  {"parse_retry_after", l_parse_retry_after},
  {"parse_content_type", l_parse_content_type},
  {"parse_content_disposition", l_parse_content_disposition},
  {"multi", tk_multi_new},
  {"now", tk_now},
  {"sleep", tk_sleep},
  {NULL, NULL}};

int luaopen_taskapi_core(lua_State *L);

static void pin_module(void)
{
  Dl_info info;
  if (dladdr((void *)pin_module, &info) && info.dli_fname) {
    void *h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    (void)h; /* the reference this takes is never dropped, on purpose */
  }
}

int luaopen_taskapi_core(lua_State *L)
{
  if (!tk_global_ready) {
    pin_module();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return luaL_error(L, "taskapi.core: curl_global_init failed");
    tk_global_ready = 1;
  }
  tk_transport_open(L);
  lua_newtable(L);
  luaL_setfuncs(L, core_funcs, 0);
  tk_crypto_open(L); /* hmac_sha256, sha256, sha256_file, equal (crypto.c) */
  tk_download_open(L); /* place, remove_part (download.c) */
  lua_pushliteral(L, TK_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, curl_version());
  lua_setfield(L, -2, "curl_version");
  tk_sqlite_open(L); /* sqlite_open, sqlite_version (sqlite.c) */
  tk_redis_open(L); /* redis_connect, redis_null (redis.c) */
  tk_json_open(L);
  lua_setfield(L, -2, "null");
  return 1;
}
