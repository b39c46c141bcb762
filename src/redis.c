/* redis.c: a small binding of Debian's libhiredis (blocking API) for the Lua layer's Redis
 * client (lua/taskapi/util/redis.lua) outside nginx. Knows no key, no schema, no provider.
 *
 *   core.redis_connect(host, port [, timeout_seconds]) -> conn | nil, err
 *   conn:call(arg1, arg2, ...)     -> reply | nil, err   (one command, binary-safe argv)
 *   conn:pipeline({{...}, {...}})  -> {reply, ...} | nil, err  (sent together, read in order)
 *   conn:broken()                  -> nil | the transport error that broke the connection
 *   conn:close()                   -> true   (also __gc and __close; idempotent)
 *   core.redis_null                -> the nil reply's sentinel: the light userdata NULL, the
 *                                     same value every time (and equal to ngx.null / cjson.null)
 *
 * Arguments are strings or numbers (integral numbers are sent as integers, others with 17
 * significant digits). Replies: integer -> integer (a number on LuaJIT, exact below 2^53),
 * status and bulk string -> string, nil -> core.redis_null, array -> array (nested).
 * An error reply of call is nil, err {kind = "server", message = "redis: ERR ...",
 * code = "ERR" (its first word), retryable = true for LOADING/BUSY/TRYAGAIN/MASTERDOWN};
 * inside an array (EXEC) or as one of pipeline's replies, the same err table sits in its
 * slot. An I/O error, the server closing, or the timeout is nil, err {kind = "transport",
 * message = "redis HOST:PORT: ...", retryable = true} and marks the connection broken: every
 * later call returns that error at once, without I/O (a command that timed out may have run:
 * nothing is retried here; the Lua layer reconnects on the next call).
 *
 * Ownership: the redisContext belongs to the conn userdata and is freed by its one close.
 * Each reply is owned by the call that read it and freed before the call returns; the reply
 * is converted with lua_checkstack and table pushes only, and a Lua error there (out of
 * memory) would leak it, so conversion runs under lua_pcall (protected_push). The argv
 * scratch is a userdata (the collector owns it, so a Lua error cannot leak it). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "errors.h"
#include "redis.h"

#define TK_REDIS_MT "taskapi.core.redis"
#define TK_REDIS_MAX_ARGS 1000000

typedef struct {
  redisContext *ctx;
  int broken;        /* a transport error happened: no more I/O on ctx */
  char where[280];   /* "redis HOST:PORT" */
  char why[200];     /* what broke it */
  double timeout;
} tk_redis;

static tk_redis *check_conn(lua_State *L)
{
  return (tk_redis *)luaL_checkudata(L, 1, TK_REDIS_MT);
}

static struct timeval to_timeval(double s)
{
  struct timeval tv;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1000; /* 0 means "never" to the kernel */
  return tv;
}

/* Pushes nil and the transport error "redis HOST:PORT: what"; returns 2. */
static int fail_transport(lua_State *L, const char *where, const char *what)
{
  char msg[512];
  snprintf(msg, sizeof msg, "%s: %s", where, what);
  return tk_fail(L, "transport", msg, -1, -1, 1);
}

/* Describes the context's I/O error in r->why and marks r broken. */
static void mark_broken(tk_redis *r)
{
  redisContext *c = r->ctx;
  const char *why = "connection broken";
  char buf[200];
  if (c && c->err == REDIS_ERR_IO &&
      (errno == EAGAIN || errno == EWOULDBLOCK || strstr(c->errstr, "temporarily unavailable"))) {
    snprintf(buf, sizeof buf, "timed out after %g s", r->timeout);
    why = buf;
  } else if (c && c->err == REDIS_ERR_EOF) {
    why = "the server closed the connection";
  } else if (c && c->err && c->errstr[0]) {
    snprintf(buf, sizeof buf, "%s", c->errstr);
    if (buf[0] >= 'A' && buf[0] <= 'Z' && buf[1] >= 'a' && buf[1] <= 'z') buf[0] = (char)(buf[0] - 'A' + 'a');
    why = buf;
  }
  snprintf(r->why, sizeof r->why, "%s", why);
  r->broken = 1;
}

static int fail_broken(lua_State *L, tk_redis *r)
{
  return fail_transport(L, r->where, r->why);
}

static int retryable_code(const char *code)
{
  return strcmp(code, "LOADING") == 0 || strcmp(code, "BUSY") == 0 || strcmp(code, "TRYAGAIN") == 0 ||
         strcmp(code, "MASTERDOWN") == 0;
}

/* Pushes the err table of an error reply. */
static void push_reply_error(lua_State *L, const redisReply *rep)
{
  char msg[600], code[32];
  size_t i = 0;
  snprintf(msg, sizeof msg, "redis: %.*s", (int)(rep->len > 560 ? 560 : rep->len), rep->str ? rep->str : "");
  while (i < sizeof code - 1 && rep->str && i < rep->len && rep->str[i] != ' ' && rep->str[i] != '\0') {
    code[i] = rep->str[i];
    i++;
  }
  code[i] = '\0';
  tk_push_error(L, "server", msg, -1, -1, retryable_code(code));
  if (i > 0) {
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
  }
}

static void push_reply(lua_State *L, const redisReply *rep)
{
  size_t i;
  luaL_checkstack(L, 4, "redis reply nested too deep");
  switch (rep->type) {
  case REDIS_REPLY_INTEGER: tk_pushint(L, rep->integer); break;
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS: lua_pushlstring(L, rep->str ? rep->str : "", rep->len); break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, rep->elements > 0x7fffffff ? 0x7fffffff : (int)rep->elements, 0);
    for (i = 0; i < rep->elements; i++) {
      push_reply(L, rep->element[i]);
      lua_rawseti(L, -2, (int)(i + 1));
    }
    break;
  case REDIS_REPLY_ERROR: push_reply_error(L, rep); break;
  case REDIS_REPLY_NIL:
  default: lua_pushlightuserdata(L, NULL); break;
  }
}

/* push_reply under pcall: the reply stays owned by the caller whatever happens. */
static int push_reply_p(lua_State *L)
{
  const redisReply *rep = (const redisReply *)lua_touserdata(L, 1);
  lua_pop(L, 1);
  push_reply(L, rep);
  return 1;
}

/* Pushes the converted reply (1 value) and frees it; on a Lua error (out of memory) frees it,
 * marks the connection broken (replies after it in a pipeline are left unread) and raises. */
static void protected_push(lua_State *L, tk_redis *r, redisReply *rep)
{
  int rc;
  luaL_checkstack(L, 3, "redis reply");
  lua_pushcfunction(L, push_reply_p);
  lua_pushlightuserdata(L, rep);
  rc = lua_pcall(L, 1, 1, 0);
  freeReplyObject(rep);
  if (rc != 0) {
    snprintf(r->why, sizeof r->why, "a reply could not be converted (out of memory)");
    r->broken = 1;
    lua_error(L);
  }
}

static int l_connect(lua_State *L)
{
  size_t hlen;
  const char *host = luaL_checklstring(L, 1, &hlen);
  lua_Number port = luaL_checknumber(L, 2);
  lua_Number timeout = luaL_optnumber(L, 3, 5);
  tk_redis *r;
  char where[280];
  if (hlen == 0 || hlen > 253 || strlen(host) != hlen) return tk_fail_arg(L, "redis_connect: the host must be 1 to 253 bytes without NUL");
  if (!(port >= 1 && port <= 65535 && port == floor(port))) return tk_fail_arg(L, "redis_connect: the port must be a whole number from 1 to 65535");
  if (!(timeout > 0 && timeout <= 86400)) return tk_fail_arg(L, "redis_connect: the timeout must be more than 0 and at most 86400 seconds");
  snprintf(where, sizeof where, "redis %s:%d", host, (int)port);
  r = (tk_redis *)lua_newuserdata(L, sizeof *r);
  memset(r, 0, sizeof *r);
  r->timeout = (double)timeout;
  snprintf(r->where, sizeof r->where, "%s", where);
  luaL_getmetatable(L, TK_REDIS_MT);
  lua_setmetatable(L, -2);
  r->ctx = redisConnectWithTimeout(host, (int)port, to_timeval((double)timeout));
  if (!r->ctx) return fail_transport(L, where, "out of memory");
  /* the same timeout for every command's reads and writes */
  if (r->ctx->err || redisSetTimeout(r->ctx, to_timeval((double)timeout)) != REDIS_OK) {
    int n;
    mark_broken(r);
    n = fail_transport(L, where, r->why);
    redisFree(r->ctx);
    r->ctx = NULL;
    return n;
  }
  return 1;
}

/* argv scratch: pointers, lengths and a number buffer per argument, in one userdata. */
typedef struct {
  const char **argv;
  size_t *lens;
  char (*nums)[32];
} tk_argv;

static int make_argv(lua_State *L, tk_argv *a, int n)
{
  char *mem;
  size_t each = sizeof(char *) + sizeof(size_t) + 32;
  if (n < 1 || n > TK_REDIS_MAX_ARGS) return 0;
  mem = (char *)lua_newuserdata(L, each * (size_t)n); /* owned by the collector */
  a->lens = (size_t *)mem;
  a->argv = (const char **)(mem + sizeof(size_t) * (size_t)n);
  a->nums = (char (*)[32])(mem + (sizeof(size_t) + sizeof(char *)) * (size_t)n);
  return 1;
}

/* Sets argument i from the Lua value at idx; 0 when it is neither a string nor a number. */
static int set_arg(lua_State *L, tk_argv *a, int i, int idx)
{
  if (lua_type(L, idx) == LUA_TSTRING) {
    a->argv[i] = lua_tolstring(L, idx, &a->lens[i]);
    return 1;
  }
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int len;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
      len = snprintf(a->nums[i], 32, "%lld", (long long)lua_tointeger(L, idx));
    } else
#endif
    {
      lua_Number v = lua_tonumber(L, idx);
      if (v == floor(v) && fabs(v) < 9.2e18) len = snprintf(a->nums[i], 32, "%lld", (long long)v);
      else len = snprintf(a->nums[i], 32, "%.17g", (double)v);
    }
    a->argv[i] = a->nums[i];
    a->lens[i] = (size_t)len;
    return 1;
  }
  return 0;
}

static int usable(lua_State *L, tk_redis *r)
{
  if (!r->ctx && !r->broken) {
    snprintf(r->why, sizeof r->why, "the connection is closed");
    r->broken = 1;
  }
  (void)L;
  return !r->broken;
}

static int l_call(lua_State *L)
{
  tk_redis *r = check_conn(L);
  int n = lua_gettop(L) - 1, i;
  tk_argv a;
  redisReply *rep;
  if (n < 1) return tk_fail_arg(L, "redis call: no command");
  for (i = 2; i <= n + 1; i++) {
    int t = lua_type(L, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return tk_fail_arg(L, "redis call: argument %d is a %s (strings or numbers)", i - 1, lua_typename(L, t));
  }
  if (!usable(L, r)) return fail_broken(L, r);
  if (!make_argv(L, &a, n)) return tk_fail_arg(L, "redis call: %d arguments (at most %d)", n, TK_REDIS_MAX_ARGS);
  for (i = 0; i < n; i++) set_arg(L, &a, i, i + 2);
  rep = (redisReply *)redisCommandArgv(r->ctx, n, a.argv, a.lens);
  if (!rep) {
    mark_broken(r);
    return fail_broken(L, r);
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    lua_pushnil(L);
    push_reply_error(L, rep);
    freeReplyObject(rep);
    return 2;
  }
  protected_push(L, r, rep);
  return 1;
}

/* Appends command i (the table at the stack top) to the output buffer; 0 and an err pushed
 * when it is not an array of strings or numbers. */
static int append_one(lua_State *L, tk_redis *r, int i)
{
  int n = (int)tk_rawlen(L, -1), j, top = lua_gettop(L), tbl = top;
  tk_argv a;
  if (n < 1 || n > TK_REDIS_MAX_ARGS) {
    tk_fail_arg(L, "redis pipeline: command %d has %d arguments (1 to %d)", i, n, TK_REDIS_MAX_ARGS);
    return 0;
  }
  luaL_checkstack(L, n + 2, "redis pipeline: too many arguments");
  make_argv(L, &a, n);
  for (j = 0; j < n; j++) {
    lua_rawgeti(L, tbl, j + 1);
    if (!set_arg(L, &a, j, -1)) {
      const char *t = luaL_typename(L, -1);
      lua_settop(L, top);
      tk_fail_arg(L, "redis pipeline: command %d, argument %d is a %s (strings or numbers)", i, j + 1, t);
      return 0;
    }
  }
  if (redisAppendCommandArgv(r->ctx, n, a.argv, a.lens) != REDIS_OK) {
    mark_broken(r);
    lua_settop(L, top);
    fail_broken(L, r);
    return 0;
  }
  lua_settop(L, top);
  return 1;
}

static int l_pipeline(lua_State *L)
{
  tk_redis *r = check_conn(L);
  int n, i;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = (int)tk_rawlen(L, 2);
  lua_settop(L, 2);
  /* every command checked before anything is sent */
  for (i = 1; i <= n; i++) {
    int m, j;
    lua_rawgeti(L, 2, i);
    if (!lua_istable(L, -1)) return tk_fail_arg(L, "redis pipeline: command %d is a %s (an array of arguments)", i, luaL_typename(L, -1));
    m = (int)tk_rawlen(L, -1);
    if (m < 1) return tk_fail_arg(L, "redis pipeline: command %d is empty", i);
    for (j = 1; j <= m; j++) {
      int t;
      lua_rawgeti(L, -1, j);
      t = lua_type(L, -1);
      lua_pop(L, 1);
      if (t != LUA_TSTRING && t != LUA_TNUMBER)
        return tk_fail_arg(L, "redis pipeline: command %d, argument %d is a %s (strings or numbers)", i, j, lua_typename(L, t));
    }
    lua_pop(L, 1);
  }
  if (!usable(L, r)) return fail_broken(L, r);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    if (!append_one(L, r, i)) {
      /* some commands may sit in the output buffer: the connection cannot be trusted */
      if (!r->broken) {
        snprintf(r->why, sizeof r->why, "a pipeline was left half sent");
        r->broken = 1;
      }
      return 2;
    }
    lua_pop(L, 1);
  }
  lua_createtable(L, n, 0);
  for (i = 1; i <= n; i++) {
    void *rep = NULL;
    if (redisGetReply(r->ctx, &rep) != REDIS_OK || !rep) {
      if (rep) freeReplyObject(rep);
      mark_broken(r);
      return fail_broken(L, r);
    }
    protected_push(L, r, (redisReply *)rep);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int l_broken(lua_State *L)
{
  tk_redis *r = check_conn(L);
  char msg[512];
  if (usable(L, r)) return 0;
  snprintf(msg, sizeof msg, "%s: %s", r->where, r->why);
  tk_push_error(L, "transport", msg, -1, -1, 1);
  return 1;
}

/* The one idempotent close: close, __gc and __close. */
static int l_close(lua_State *L)
{
  tk_redis *r = (tk_redis *)luaL_checkudata(L, 1, TK_REDIS_MT);
  if (r->ctx) {
    redisFree(r->ctx);
    r->ctx = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tostring(lua_State *L)
{
  tk_redis *r = (tk_redis *)luaL_checkudata(L, 1, TK_REDIS_MT);
  lua_pushfstring(L, "taskapi.core.redis (%s%s)", r->where + 6,
                  !r->ctx ? ", closed" : r->broken ? ", broken" : "");
  return 1;
}

static const luaL_Reg conn_methods[] = {
  {"call", l_call}, {"pipeline", l_pipeline}, {"broken", l_broken}, {"close", l_close}, {NULL, NULL}};

void tk_redis_open(lua_State *L)
{
  tk_new_class(L, TK_REDIS_MT, conn_methods, l_close, l_tostring);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "redis_connect");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "redis_null");
}
