/* transport.c: the transfer engine of taskapi.core: the multi handle userdata (one libcurl
 * multi; its connection cache gives keep-alive) and the transfer userdata (one easy handle,
 * its header list, buffers and, in download mode, its file; see download.c).
 * Ownership: a running transfer, and a finished one not yet handed out by completed(), is
 * referenced from the multi's user value table (keyed by its C address), so Lua GC cannot
 * free it; a transfer's user value table references its multi, keeping it alive. Both are
 * weak against the outside world: when neither is reachable both are collected, and
 * whichever finalizer runs first detaches the other. Every C resource has one owner: the
 * easy handle, slist, buffers and fd belong to the transfer, the CURLM to the multi; one
 * idempotent close per userdata serves close, __gc and __close.
 * No Lua callbacks run inside libcurl: callbacks only touch C memory. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "errors.h"
#include "json.h"
#include "lean.h"
#include "parse.h"
#include "download.h"
#include "mime.h"
#include "pool.h"
#include "request.h"
#include "result.h"
#include "sockets.h"
#include "transport.h"

/* ---------------------------------------------------------------- transfer lifecycle */

static void unlink_running(tk_multi *m, tk_transfer *t)
{
  if (t->prev) t->prev->next = t->next;
  else if (m->head == t) m->head = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
  m->running--;
}

static void unlink_done(tk_multi *m, tk_transfer *t)
{
  tk_transfer **pp = &m->done_head, *prev = NULL;
  while (*pp && *pp != t) {
    prev = *pp;
    pp = &(*pp)->done_next;
  }
  if (*pp) {
    *pp = t->done_next;
    if (m->done_tail == t) m->done_tail = prev;
  }
  t->done_next = NULL;
  t->in_done = 0;
}

/* A running transfer finished with code: capture what result() needs, settle the
 * download, release the easy handle and queue the transfer in the done list. */
static void transfer_finish(tk_multi *m, tk_transfer *t, CURLcode code)
{
  char *u = NULL;
  t->code = code;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
  curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_COUNT, &t->redirects);
  curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &t->total_time);
  t->redirects += t->lean.handed_hops; /* a redirect the plain-HTTP path handed over */
  t->total_time += t->lean.handed_time;
  if (curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &t->request_size) != CURLE_OK)
    t->request_size = -1; /* unknown: taken as sent */
  {
    curl_off_t d = 0, c = -1;
    curl_easy_getinfo(t->easy, CURLINFO_SIZE_DOWNLOAD_T, &d);
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &c);
    t->final_done = (long long)d;
    t->final_total = c > 0 ? (long long)c : 0;
  }
  if (curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &u) == CURLE_OK && u &&
      !(t->url && strcmp(u, t->url) == 0)) { /* the request's own URL needs no copy */
    size_t n = strlen(u) + 1;
    t->effective_url = (char *)malloc(n);
    if (t->effective_url) memcpy(t->effective_url, u, n);
  }
  t->done_at = time(NULL);
  curl_multi_remove_handle(m->cm, t->easy);
  if (t->dl.active) tk_dl_finish(t);
  tk_pool_put(m, t->easy); /* reset: it no longer points at t's slist, mime or buffers */
  t->easy = NULL;
  tk_mime_free(t);
  curl_slist_free_all(t->slist);
  t->slist = NULL;
  tk_transfer_done(m, t);
}

void tk_transfer_done(tk_multi *m, tk_transfer *t)
{
  unlink_running(m, t);
  t->state = TK_DONE;
  t->in_done = 1;
  t->done_next = NULL;
  if (m->done_tail) m->done_tail->done_next = t;
  else m->done_head = t;
  m->done_tail = t;
}

/* Stops a running transfer: out of the multi, easy handle freed, part file removed. */
static void transfer_abort(tk_transfer *t)
{
  tk_multi *m = t->m;
  if (t->state != TK_RUNNING) return;
  if (m) {
    if (m->cm && t->easy) curl_multi_remove_handle(m->cm, t->easy);
    tk_lean_abort(m, t);
    unlink_running(m, t);
  }
  tk_pool_put(m, t->easy); /* NULL m: cleaned up */
  t->easy = NULL;
  tk_mime_free(t);
  tk_dl_abort(t);
  t->state = TK_CANCELLED;
  t->m = NULL;
}

static void transfer_release(tk_transfer *t)
{
  if (t->easy) curl_easy_cleanup(t->easy);
  t->easy = NULL;
  tk_mime_free(t);
  curl_slist_free_all(t->slist);
  t->slist = NULL;
  tk_buf_free(&t->hdr);
  tk_buf_free(&t->body);
  free(t->effective_url);
  t->effective_url = NULL;
  free(t->url);
  t->url = NULL;
  free(t->err_msg);
  t->err_msg = NULL;
  tk_dl_free(&t->dl);
  tk_lean_release(t);
}

/* multi's user value table: [lightuserdata t] = transfer userdata */
static void multi_forget(lua_State *L, int midx, tk_transfer *t)
{
  tk_getuservalue(L, midx);
  if (lua_istable(L, -1)) {
    lua_pushlightuserdata(L, t);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

/* pushes the multi userdata a transfer references (or nil) */
static void transfer_push_multi(lua_State *L, int tidx)
{
  tk_getuservalue(L, tidx);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "multi");
    lua_remove(L, -2);
  } else {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* Detaches t from its multi (running: aborted; done: dropped from the done list). */
static void transfer_detach(lua_State *L, int tidx, tk_transfer *t)
{
  tk_multi *m = t->m;
  if (!m) return;
  tidx = tk_absindex(L, tidx);
  if (t->state == TK_RUNNING) transfer_abort(t);
  else if (t->in_done) unlink_done(m, t);
  t->m = NULL;
  transfer_push_multi(L, tidx);
  if (!lua_isnil(L, -1)) multi_forget(L, lua_gettop(L), t);
  lua_pop(L, 1);
}

/* ---------------------------------------------------------------- multi methods */

static tk_multi *check_multi(lua_State *L)
{
  return (tk_multi *)luaL_checkudata(L, 1, TK_MULTI_MT);
}

static tk_transfer *check_transfer(lua_State *L)
{
  return (tk_transfer *)luaL_checkudata(L, 1, TK_TRANSFER_MT);
}

/* Reads the req table at 2, sets t up on the plain-HTTP path (lean.c) when it can serve the
 * request, else on libcurl, and starts it, linked as running in m. tidx: t's userdata, or 0
 * for a transfer of m:request's own (no userdata: nothing to keep alive or cache). Returns
 * 0; or, with t's resources released, pushes nil, err and returns 2. */
static int transfer_start(lua_State *L, tk_multi *m, tk_transfer *t, int tidx)
{
  tk_req r;
  const char *err;
  int lean = 0, base = lua_gettop(L);
  err = tk_request_read(L, 2, t, &r);
  if (!err) {
    lean = tk_lean_setup(L, 2, m, t, &r);
    if (lean < 0) err = "out of memory";
  }
  if (!err && !lean) {
    t->easy = tk_pool_get(m);
    if (!t->easy) {
      transfer_release(t);
      return tk_fail(L, "transport", "curl_easy_init failed", -1, -1, 0);
    }
    err = tk_request_setup(L, 2, tidx, t, &r);
  }
  if (err) {
    int n;
    lua_settop(L, base);
    /* before the release: err may be t's own buffer; a part file that cannot be opened or
       locked (download.c) is an io error, not a bad argument */
    n = t->err_kind ? tk_fail(L, t->err_kind, err, -1, -1, t->err_retryable)
                    : tk_fail_arg(L, "%s", err);
    tk_pool_put(m, t->easy);
    t->easy = NULL;
    transfer_release(t);
    return n;
  }
  lua_settop(L, base);
  if (!lean) {
    CURLMcode mc = curl_multi_add_handle(m->cm, t->easy);
    if (mc != CURLM_OK) {
      tk_pool_put(m, t->easy);
      t->easy = NULL;
      transfer_release(t);
      return tk_fail(L, "transport", curl_multi_strerror(mc), -1, -1, 0);
    }
  }
  t->state = TK_RUNNING;
  t->m = m;
  t->next = m->head;
  if (m->head) m->head->prev = t;
  m->head = t;
  m->running++;
  if (tidx) { /* referenced by the multi while it runs or waits in the done list */
    tk_getuservalue(L, 1);
    lua_pushlightuserdata(L, t);
    lua_pushvalue(L, tidx);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (lean) m->n_plain++;
  else m->n_curl++;
  if (lean) {
    m->lean_running++;
    tk_lean_start(m, t); /* may finish it already: it is in the done list then */
  }
  return 0;
}

/* m:add(req) with the multi at 1 and req at 2: pushes the transfer or nil, err. */
static int multi_add(lua_State *L)
{
  tk_multi *m = check_multi(L);
  tk_transfer *t;
  int tidx, n;
  if (m->closed) return tk_fail_arg(L, "multi handle is closed");
  if (!lua_istable(L, 2)) return tk_fail_arg(L, "req must be a table");
  lua_settop(L, 2);
  t = (tk_transfer *)tk_newuserdata(L, sizeof *t);
  memset(t, 0, sizeof *t);
  t->dl.fd = -1;
  t->lean.fd = -1;
  t->state = TK_CLOSED; /* nothing to abort until it is added */
  tidx = lua_gettop(L);
  luaL_getmetatable(L, TK_TRANSFER_MT);
  lua_setmetatable(L, tidx);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "multi");
  lua_getfield(L, 2, "url"); /* res.effective_url reuses it (checked by the start) */
  lua_setfield(L, -2, "url");
  tk_setuservalue(L, tidx);
  n = transfer_start(L, m, t, tidx);
  if (n) return n;
  lua_settop(L, tidx);
  return 1;
}

static void multi_step(tk_multi *m)
{
  int left = 0;
  CURLMsg *msg;
  if (m->closed) return;
  tk_socks_drive(m);
  while ((msg = curl_multi_info_read(m->cm, &left)) != NULL) {
    if (msg->msg == CURLMSG_DONE) {
      CURL *e = msg->easy_handle;
      CURLcode code = msg->data.result;
      tk_transfer *t = NULL;
      curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
      if (t && t->state == TK_RUNNING) transfer_finish(m, t, code);
    }
  }
}

static int multi_perform(lua_State *L)
{
  tk_multi *m = check_multi(L);
  multi_step(m);
  tk_pushint(L, m->running);
  return 1;
}

static int multi_poll(lua_State *L)
{
  tk_multi *m = check_multi(L);
  lua_Number s = luaL_optnumber(L, 2, 1);
  int n = 0;
  long ms = s <= 0 ? 0 : s > 86400 ? 86400000L : (long)(s * 1000);
  if (m->closed) return 0;
  n = tk_socks_wait(m, ms);
  tk_pushint(L, n);
  return 1;
}

/* Hands out the done list: the caller owns the returned transfers from now on. */
static int multi_completed(lua_State *L)
{
  tk_multi *m = check_multi(L);
  int i = 0;
  lua_settop(L, 1);
  lua_newtable(L);
  tk_getuservalue(L, 1);
  while (m->done_head) {
    tk_transfer *t = m->done_head;
    m->done_head = t->done_next;
    if (!m->done_head) m->done_tail = NULL;
    t->done_next = NULL;
    t->in_done = 0;
    t->m = NULL;
    lua_pushlightuserdata(L, t);
    lua_rawget(L, 3);
    lua_rawseti(L, 2, ++i);
    lua_pushlightuserdata(L, t);
    lua_pushnil(L);
    lua_rawset(L, 3);
  }
  lua_pop(L, 1);
  return 1;
}

/* m:request(req): one transfer to its end, blocking. The transfer is m:request's own, on
 * the C heap: no userdata, no user value table, nothing for the collector to finalize. */
static int multi_request(lua_State *L)
{
  tk_multi *m = check_multi(L);
  tk_transfer *t;
  int n;
  if (m->closed) return tk_fail_arg(L, "multi handle is closed");
  if (!lua_istable(L, 2)) return tk_fail_arg(L, "req must be a table");
  lua_settop(L, 2);
  t = (tk_transfer *)calloc(1, sizeof *t);
  if (!t) return tk_fail(L, "transport", "out of memory", -1, -1, 0);
  t->dl.fd = -1;
  t->lean.fd = -1;
  t->state = TK_CLOSED;
  n = transfer_start(L, m, t, 0);
  if (n) {
    free(t);
    return n;
  }
  /* wait first: a plain-HTTP request has just been sent (its answer takes a round trip), and
     a libcurl one has its timer due now, so the wait returns at once */
  while (t->state == TK_RUNNING) {
    tk_socks_wait(m, 1000);
    multi_step(m);
  }
  /* take only our own transfer out of the done list; others stay for completed() */
  if (t->in_done) unlink_done(m, t);
  t->m = NULL;
  lua_getfield(L, 2, "url"); /* 3: res.effective_url when there was no redirect */
  n = tk_push_result(L, 0, t, 0, 3);
  transfer_release(t);
  free(t);
  return n;
}

/* m:stats(): which path the transfers took: {plain = n, curl = n, handed = n, idle = n}. */
static int multi_stats(lua_State *L)
{
  tk_multi *m = check_multi(L);
  lua_createtable(L, 0, 4);
  tk_pushint(L, m->n_plain);
  lua_setfield(L, -2, "plain");
  tk_pushint(L, m->n_curl);
  lua_setfield(L, -2, "curl");
  tk_pushint(L, m->n_handed);
  lua_setfield(L, -2, "handed");
  tk_pushint(L, m->nidle);
  lua_setfield(L, -2, "idle");
  return 1;
}

static int multi_count(lua_State *L)
{
  tk_multi *m = check_multi(L);
  tk_pushint(L, m->running);
  return 1;
}

/* The one idempotent close: close, __gc and __close. Aborts and frees every running
 * transfer (part files removed); finished ones keep their results. */
static int multi_close(lua_State *L)
{
  tk_multi *m = check_multi(L);
  if (m->closed) return 0;
  while (m->head) {
    tk_transfer *t = m->head;
    transfer_abort(t); /* unlinks it from m->head */
  }
  while (m->done_head) {
    tk_transfer *t = m->done_head;
    m->done_head = t->done_next;
    t->done_next = NULL;
    t->in_done = 0;
    t->m = NULL;
  }
  m->done_tail = NULL;
  tk_pool_free(m);
  tk_lean_free(m);
  if (m->cm) curl_multi_cleanup(m->cm);
  m->cm = NULL;
  tk_socks_free(m);
  m->closed = 1;
  lua_newtable(L);
  tk_setuservalue(L, 1);
  return 0;
}

static int multi_tostring(lua_State *L)
{
  tk_multi *m = check_multi(L);
  lua_pushfstring(L, "taskapi.core.multi (%s, %d running)", m->closed ? "closed" : "open",
                  m->running);
  return 1;
}

/* ---------------------------------------------------------------- transfer methods */

static int transfer_progress(lua_State *L)
{
  tk_transfer *t = check_transfer(L);
  long long done = 0, total = 0;
  if (t->dl.active) {
    tk_dl_progress(t, &done, &total);
  } else if (t->bf.active) { /* req.body_file: bytes of the file sent */
    done = t->bf.sent;
    total = t->bf.size;
  } else if (t->lean.active && t->state == TK_RUNNING) {
    done = (long long)t->body.len;
    total = t->lean.clen > 0 ? t->lean.clen : 0;
  } else if (t->easy) {
    curl_off_t d = 0, c = -1;
    curl_easy_getinfo(t->easy, CURLINFO_SIZE_DOWNLOAD_T, &d);
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &c);
    done = d;
    total = c > 0 ? c : 0;
  } else {
    done = t->final_done;
    total = t->final_total;
  }
  tk_pushint(L, done);
  tk_pushint(L, total);
  return 2;
}

static int transfer_result(lua_State *L)
{
  tk_transfer *t = check_transfer(L);
  return tk_push_result(L, 1, t, 1, 0);
}

static int transfer_cancel(lua_State *L)
{
  tk_transfer *t = check_transfer(L);
  int was = t->state == TK_RUNNING;
  if (was) transfer_detach(L, 1, t);
  lua_pushboolean(L, was);
  return 1;
}

static int transfer_close_at(lua_State *L, int tidx, tk_transfer *t)
{
  transfer_detach(L, tidx, t); /* no-op unless attached; release is idempotent */
  transfer_release(t);
  t->state = TK_CLOSED;
  /* the kept answer goes too: a closed transfer waits for its finalizer, one more collector
     cycle, and its decoded JSON with it otherwise */
  tk_getuservalue(L, tidx);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    lua_setfield(L, -2, "res");
    lua_pushnil(L);
    lua_setfield(L, -2, "err");
  }
  lua_pop(L, 1);
  return 0;
}

static int transfer_close(lua_State *L)
{
  tk_transfer *t = check_transfer(L);
  return transfer_close_at(L, 1, t);
}

static int transfer_tostring(lua_State *L)
{
  static const char *const names[] = {"?", "running", "done", "cancelled", "closed"};
  tk_transfer *t = check_transfer(L);
  lua_pushfstring(L, "taskapi.core.transfer (%s)", names[t->state >= 1 && t->state <= 4 ? t->state : 0]);
  return 1;
}

/* ---------------------------------------------------------------- registration */

int tk_multi_new(lua_State *L)
{
  tk_multi *m;
  lua_Number hc = 0, mc = -1;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "max_host_connections");
    hc = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 1, "max_connects");
    mc = luaL_optnumber(L, -1, -1);
    lua_pop(L, 2);
  } else if (!lua_isnoneornil(L, 1)) {
    return tk_fail_arg(L, "multi options must be a table");
  }
  m = (tk_multi *)tk_newuserdata(L, sizeof *m);
  memset(m, 0, sizeof *m);
  m->closed = 1; /* until the CURLM exists */
  luaL_getmetatable(L, TK_MULTI_MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  tk_setuservalue(L, -2);
  m->cm = curl_multi_init();
  if (!m->cm) return tk_fail(L, "transport", "curl_multi_init failed", -1, -1, 0);
  m->closed = 0;
  tk_socks_init(m);
  tk_lean_init(m, (long)hc, (long)mc);
  if (hc > 0) curl_multi_setopt(m->cm, CURLMOPT_MAX_HOST_CONNECTIONS, (long)hc);
  if (mc >= 0) curl_multi_setopt(m->cm, CURLMOPT_MAXCONNECTS, (long)mc);
  return 1;
}

static const luaL_Reg multi_methods[] = {
  {"add", multi_add},           {"perform", multi_perform}, {"poll", multi_poll},
  {"completed", multi_completed}, {"request", multi_request}, {"count", multi_count},
  {"stats", multi_stats},
  {"close", multi_close},       {NULL, NULL}};

static const luaL_Reg transfer_methods[] = {
  {"progress", transfer_progress}, {"result", transfer_result}, {"cancel", transfer_cancel},
  {"close", transfer_close},       {NULL, NULL}};


void tk_transport_open(lua_State *L)
{
  tk_new_class(L, TK_MULTI_MT, multi_methods, multi_close, multi_tostring);
  tk_new_class(L, TK_TRANSFER_MT, transfer_methods, transfer_close, transfer_tostring);
}
