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

#include "errors.h"
#include "json.h"
#include "parse.h"
#include "download.h"
#include "mime.h"
#include "pool.h"
#include "sockets.h"
#include "transport.h"

/* ---------------------------------------------------------------- buffers, headers */

int tk_buf_append(tk_buf *b, const char *p, size_t n)
{
  if (n == 0) return 0;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    char *d;
    while (cap < b->len + n) cap *= 2;
    d = (char *)realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void tk_buf_free(tk_buf *b)
{
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *tk_err_buf(tk_transfer *t)
{
  if (!t->err_msg) t->err_msg = (char *)calloc(1, TK_ERR_MSG_MAX);
  return t->err_msg;
}

void tk_set_err(tk_transfer *t, const char *kind, int retryable, const char *fmt, ...)
{
  va_list ap;
  char *b;
  if (t->err_kind) return;
  t->err_kind = kind;
  t->err_retryable = retryable;
  b = tk_err_buf(t);
  if (!b) return; /* the kind still stands; push_transfer_error says the text was lost */
  va_start(ap, fmt);
  vsnprintf(b, TK_ERR_MSG_MAX, fmt, ap);
  va_end(ap);
}

/* Iterates the header lines of h (after the status line): calls fn for each field. */
typedef int (*tk_header_fn)(const char *name, size_t nlen, const char *val, size_t vlen,
                            void *ud);

static void header_each(const tk_buf *h, tk_header_fn fn, void *ud)
{
  size_t i = 0;
  while (i < h->len) {
    const char *line = h->data + i;
    size_t n = 0, c;
    while (i + n < h->len && line[n] != '\n') n++;
    i += n + 1;
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n')) n--;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) continue;
    for (c = 0; c < n && line[c] != ':'; c++) {}
    if (c == 0 || c >= n) continue;
    {
      const char *v = line + c + 1;
      size_t vl = n - c - 1, nl = c;
      while (vl > 0 && (*v == ' ' || *v == '\t')) { v++; vl--; }
      while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      while (nl > 0 && (line[nl - 1] == ' ' || line[nl - 1] == '\t')) nl--;
      if (nl > 0 && fn(line, nl, v, vl, ud)) return;
    }
  }
}

struct find_ud {
  const char *name;
  size_t nlen;
  const char *val;
  size_t vlen;
};

static int find_fn(const char *name, size_t nlen, const char *val, size_t vlen, void *ud)
{
  struct find_ud *f = (struct find_ud *)ud;
  if (nlen == f->nlen && strncasecmp(name, f->name, nlen) == 0) {
    f->val = val;
    f->vlen = vlen;
  }
  return 0;
}

const char *tk_header_find(const tk_buf *h, const char *name, size_t *vlen)
{
  struct find_ud f;
  f.name = name;
  f.nlen = strlen(name);
  f.val = NULL;
  f.vlen = 0;
  header_each(h, find_fn, &f);
  if (f.val && vlen) *vlen = f.vlen;
  return f.val;
}

/* One pass over the headers: every field into the table at the top of the stack, and the
 * (last) values of the few fields push_result reads. */
struct push_ud {
  lua_State *L;
  int table; /* also fill the headers table at the top of the stack */
  const char *ct, *ra, *trace;
  size_t ct_len, ra_len, trace_len;
};

static int push_fn(const char *name, size_t nlen, const char *val, size_t vlen, void *ud)
{
  struct push_ud *pu = (struct push_ud *)ud;
  lua_State *L = pu->L;
  char low[256];
  size_t k;
  if (nlen >= sizeof low) return 0;
  if (!pu->table) {
    /* only the three fields read below: compare without a lower-case copy */
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0) {
      pu->ct = val;
      pu->ct_len = vlen;
    } else if (nlen == 11 && strncasecmp(name, "retry-after", 11) == 0) {
      pu->ra = val;
      pu->ra_len = vlen;
    } else if (nlen == 16 && strncasecmp(name, "x-tripo-trace-id", 16) == 0) {
      pu->trace = val;
      pu->trace_len = vlen;
    }
    return 0;
  }
  for (k = 0; k < nlen; k++) {
    char c = name[k];
    low[k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  if (nlen == 12 && memcmp(low, "content-type", 12) == 0) {
    pu->ct = val;
    pu->ct_len = vlen;
  } else if (nlen == 11 && memcmp(low, "retry-after", 11) == 0) {
    pu->ra = val;
    pu->ra_len = vlen;
  } else if (nlen == 16 && memcmp(low, "x-tripo-trace-id", 16) == 0) {
    pu->trace = val;
    pu->trace_len = vlen;
  }
  lua_pushlstring(L, low, nlen);
  lua_pushlstring(L, val, vlen);
  lua_rawset(L, -3);
  return 0;
}

/* ---------------------------------------------------------------- libcurl callbacks */

static size_t header_cb(char *p, size_t size, size_t nmemb, void *ud)
{
  tk_transfer *t = (tk_transfer *)ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) t->hdr.len = 0; /* a new response */
  if (t->hdr.len + n > TK_MAX_HEADER_BYTES) {
    tk_set_err(t, "bad_response", 0, "response headers larger than %u bytes",
               TK_MAX_HEADER_BYTES);
    return 0;
  }
  if (tk_buf_append(&t->hdr, p, n) != 0) {
    tk_set_err(t, "io", 0, "out of memory");
    return 0;
  }
  return n;
}

static size_t memory_write(char *p, size_t size, size_t nmemb, void *ud)
{
  tk_transfer *t = (tk_transfer *)ud;
  size_t n = size * nmemb;
  if (t->body.len + n > t->max_body) {
    tk_set_err(t, "bad_response", 0, "response body larger than %lu bytes",
               (unsigned long)t->max_body);
    return 0;
  }
  if (tk_buf_append(&t->body, p, n) != 0) {
    tk_set_err(t, "io", 0, "out of memory");
    return 0;
  }
  return n;
}

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
  unlink_running(m, t);
  if (t->dl.active) tk_dl_finish(t);
  tk_pool_put(m, t->easy); /* reset: it no longer points at t's slist, mime or buffers */
  t->easy = NULL;
  tk_mime_free(t);
  curl_slist_free_all(t->slist);
  t->slist = NULL;
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

/* ---------------------------------------------------------------- error mapping */

static int is_tls_error(CURLcode c)
{
  switch (c) {
  case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_ENGINE_NOTFOUND: case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_SHUTDOWN_FAILED: case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR: case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS: case CURLE_SSL_CLIENTCERT:
    return 1;
  default:
    return 0;
  }
}

static int is_retryable_transport(CURLcode c)
{
  switch (c) {
  case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT: case CURLE_SEND_ERROR: case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE: case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM: case CURLE_HTTP3: case CURLE_QUIC_CONNECT_ERROR:
  case CURLE_WEIRD_SERVER_REPLY:
    return 1;
  default:
    return 0;
  }
}

/* "host:port" of the request URL into out, for error messages (only errors parse it). */
static void hostport(const tk_transfer *t, char *out, size_t n)
{
  CURLU *u;
  char *host = NULL, *port = NULL;
  snprintf(out, n, "?");
  if (!t->url || !(u = curl_url())) return;
  if (curl_url_set(u, CURLUPART_URL, t->url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
    snprintf(out, n, "%s:%s", host, port);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
}

static void fmt_seconds(char *out, size_t n, double s)
{
  if (s == floor(s)) snprintf(out, n, "%.0f", s);
  else snprintf(out, n, "%g", s);
}

/* Pushes the error of a finished transfer that failed (without err.sent). */
static void push_transfer_error_only(lua_State *L, tk_transfer *t);

/* Pushes the error of a finished transfer that failed, with err.sent: whether any byte of
 * the request went out (CURLINFO_REQUEST_SIZE); false means the server cannot have acted on
 * it (refused, not resolved, connect timeout), which is what makes a create safe to retry. */
static void push_transfer_error(lua_State *L, tk_transfer *t)
{
  push_transfer_error_only(L, t);
  lua_pushboolean(L, t->request_size != 0);
  lua_setfield(L, -2, "sent");
}

static void push_transfer_error_only(lua_State *L, tk_transfer *t)
{
  char msg[CURL_ERROR_SIZE + 512];
  long status = -1; /* libcurl failures carry no status: the exchange did not complete */
  const char *detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->code);
  char hp[300];
  if (t->err_kind) {
    tk_push_error(L, t->err_kind, t->err_msg ? t->err_msg : "(no details: out of memory)",
                  t->status > 0 ? t->status : -1, t->code != CURLE_OK ? (long)t->code : -1,
                  t->err_retryable);
    return;
  }
  hostport(t, hp, sizeof hp); /* every message below names the server */
  if (t->code == CURLE_OPERATION_TIMEDOUT) {
    char a[32], b[32];
    if (strstr(t->errbuf, "too slow")) {
      fmt_seconds(b, sizeof b, t->low_speed_time);
      snprintf(msg, sizeof msg, "stalled: less than %ld bytes/s for %s s (%s)",
               t->low_speed_limit, b, hp);
    } else if (t->timeout > 0 && t->total_time >= t->timeout - 0.05) {
      fmt_seconds(a, sizeof a, t->timeout);
      snprintf(msg, sizeof msg, "timed out after %s s (%s)", a, hp);
    } else {
      fmt_seconds(a, sizeof a, t->total_time);
      snprintf(msg, sizeof msg, "timed out after %s s (%s): %s", a, hp, detail);
    }
    tk_push_error(L, "timeout", msg, status, (long)t->code, 1);
    return;
  }
  if (t->code == CURLE_READ_ERROR) {
    /* a file of req.mime could not be read while sending */
    snprintf(msg, sizeof msg, "cannot read the file to send (%s): %s", hp, detail);
    tk_push_error(L, "io", msg, status, (long)t->code, 0);
    return;
  }
  if (is_tls_error(t->code)) {
    snprintf(msg, sizeof msg, "TLS error with %s: %s", hp, detail);
    tk_push_error(L, "transport", msg, status, (long)t->code, 0);
    return;
  }
  if (t->code == CURLE_UNSUPPORTED_PROTOCOL) {
    /* the request's own URL was checked to be http(s): only a redirect gets here (an https
       request follows https redirects only, REDIR_PROTOCOLS) */
    snprintf(msg, sizeof msg, "redirect refused from %s: %s", hp, detail);
    tk_push_error(L, "transport", msg, status, (long)t->code, 0);
    return;
  }
  if (t->code == CURLE_TOO_MANY_REDIRECTS) {
    snprintf(msg, sizeof msg, "too many redirects from %s (max %ld)", hp,
             t->max_redirects);
    tk_push_error(L, "transport", msg, status, (long)t->code, 0);
    return;
  }
  {
    /* libcurl's buffer often ends with the words of curl_easy_strerror: say them once */
    const char *what = curl_easy_strerror(t->code);
    size_t dl = strlen(detail), wl = strlen(what);
    if (strcmp(detail, what) == 0) {
      snprintf(msg, sizeof msg, "%s (%s)", what, hp);
    } else {
      if (dl > wl + 2 && strcmp(detail + dl - wl, what) == 0 && memcmp(detail + dl - wl - 2, ": ", 2) == 0)
        dl -= wl + 2;
      snprintf(msg, sizeof msg, "%s (%s): %.*s", what, hp, (int)dl, detail);
    }
  }
  tk_push_error(L, "transport", msg, status, (long)t->code, is_retryable_transport(t->code));
}

/* Pushes res, or nil, err, for a finished transfer; caches it in the transfer's user value
 * table and frees the buffers it was built from. Returns the number of values pushed. */
static int push_result(lua_State *L, int tidx, tk_transfer *t)
{
  tidx = tk_absindex(L, tidx);
  if (t->state == TK_RUNNING) return tk_fail(L, "invalid_argument", "not finished", -1, -1, 0);
  if (t->state == TK_CANCELLED)
    return tk_fail(L, "cancelled", "transfer cancelled", -1, -1, 0);
  tk_getuservalue(L, tidx);
  lua_getfield(L, -1, "res");
  if (!lua_isnil(L, -1)) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "err");
  if (!lua_isnil(L, -1)) {
    lua_remove(L, -2);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pop(L, 1);
  if (t->state == TK_CLOSED) {
    lua_pop(L, 1);
    return tk_fail(L, "invalid_argument", "transfer closed", -1, -1, 0);
  }
  /* uservalue table at the top */
  if (t->err_kind || t->code != CURLE_OK) {
    push_transfer_error(L, t);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "err");
    lua_remove(L, -2);
    lua_pushnil(L);
    lua_insert(L, -2);
    tk_buf_free(&t->hdr);
    tk_buf_free(&t->body);
    return 2;
  } else {
    struct push_ud pu;
    char ct[256];
    int body_needed = 1;
    lua_createtable(L, 0, 8); /* an API call's fields fit; downloads and errors grow it */
    tk_pushint(L, t->status);
    lua_setfield(L, -2, "status");
    memset(&pu, 0, sizeof pu);
    pu.L = L;
    pu.table = t->res_headers;
    if (pu.table) lua_createtable(L, 0, 8);
    header_each(&t->hdr, push_fn, &pu);
    if (pu.table) lua_setfield(L, -2, "headers");
    if (pu.ct && tk_parse_content_type(pu.ct, pu.ct_len, ct, sizeof ct) > 0) {
      lua_pushstring(L, ct);
      lua_setfield(L, -2, "content_type");
    }
    if (pu.ra) {
      long ra = tk_parse_retry_after(pu.ra, pu.ra_len, t->done_at);
      if (ra >= 0) {
        tk_pushint(L, ra);
        lua_setfield(L, -2, "retry_after");
      }
    }
    if (pu.trace) {
      lua_pushlstring(L, pu.trace, pu.trace_len);
      lua_setfield(L, -2, "trace_id");
    }
    if (t->effective_url) {
      lua_pushstring(L, t->effective_url);
    } else { /* no redirect: req.url itself, kept by multi_add (no new string per call) */
      lua_getfield(L, -2, "url");
    }
    lua_setfield(L, -2, "effective_url");
    tk_pushint(L, t->redirects);
    lua_setfield(L, -2, "redirects");
    lua_pushnumber(L, t->total_time);
    lua_setfield(L, -2, "time");
    if (t->dl.active && t->dl.renamed) {
      tk_dl_push_result(L, t);
      body_needed = 0;
    }
    if (body_needed && t->json) {
      if (t->body.len == 0) {
        lua_pushstring(L, "empty body");
        lua_setfield(L, -2, "json_error");
      } else {
        int n = tk_json_decode_buf(L, t->body.data, t->body.len, t->max_body);
        if (n == 1) {
          lua_setfield(L, -2, "json");
          body_needed = 0;
        } else {
          lua_getfield(L, -1, "message");
          lua_setfield(L, -4, "json_error");
          lua_pop(L, 2);
        }
      }
    }
    if (body_needed) {
      lua_pushlstring(L, t->body.data ? t->body.data : "", t->body.len);
      lua_setfield(L, -2, "body");
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "res");
    lua_remove(L, -2);
    tk_buf_free(&t->hdr);
    tk_buf_free(&t->body);
    return 1;
  }
}

/* ---------------------------------------------------------------- building a transfer */

/* Reads the number req[k] (def when nil) into *out; returns NULL, or bad (a message that
 * names the field: OPT_NUMBER builds it) for a value that is not a number from 0 to 1e12. */
static const char *opt_number(lua_State *L, int idx, const char *k, const char *bad, double def, double *out)
{
  lua_getfield(L, idx, k);
  if (lua_isnil(L, -1)) *out = def;
  else if (lua_type(L, -1) == LUA_TNUMBER) *out = lua_tonumber(L, -1);
  else {
    lua_pop(L, 1);
    return bad;
  }
  lua_pop(L, 1);
  if (*out != *out || *out < 0 || *out > 1e12) return bad;
  return NULL;
}

#define OPT_NUMBER(L, idx, k, def, out) \
  opt_number(L, idx, k, "req." k " must be a number from 0 to 1e12", def, out)

static int has_ctl(const char *s, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}

/* A timeout in seconds as libcurl's milliseconds: rounded up, and at least 2 ms, so that a
 * positive one under 1 ms is not 0 (which libcurl reads as "no timeout"), nor 1 ms (measured
 * with libcurl 7.88 over loopback: a 1 ms timeout usually ended only at the 200 ms
 * connection timer, 18 times in 20; 2 ms ended within 4 ms, 20 in 20); 0 stays "none". */
static long timeout_ms(double seconds)
{
  double ms;
  if (!(seconds > 0)) return 0;
  ms = ceil(seconds * 1000);
  if (ms < 2) ms = 2;
  if (ms > 2147483647.0) ms = 2147483647.0;
  return (long)ms;
}

/* Configures t->easy from the req table at ridx; the transfer userdata is at tidx.
 * Returns NULL or an invalid_argument message. */
static const char *setup(lua_State *L, int ridx, int tidx, tk_transfer *t)
{
  CURL *e = t->easy;
  const char *url, *method = "GET", *err;
  size_t len;
  double timeout, ctimeout, lst, lsl, maxredir, maxbody;
  char ua[128];
  int https;

  lua_getfield(L, ridx, "url");
  if (lua_type(L, -1) != LUA_TSTRING) return "req.url must be a string";
  url = lua_tolstring(L, -1, &len);
  if (has_ctl(url, len)) return "req.url contains control characters";
  https = len >= 8 && strncasecmp(url, "https://", 8) == 0;
  if (!https && !(len >= 7 && strncasecmp(url, "http://", 7) == 0))
    return "req.url must be an http or https URL";
  curl_easy_setopt(e, CURLOPT_URL, url); /* libcurl copies strings */
  t->url = (char *)malloc(len + 1);
  if (!t->url) return "out of memory";
  memcpy(t->url, url, len + 1);
  lua_pop(L, 1);

  if ((err = OPT_NUMBER(L, ridx, "timeout", 30, &timeout))) return err;
  if ((err = OPT_NUMBER(L, ridx, "connect_timeout", 10, &ctimeout))) return err;
  if ((err = OPT_NUMBER(L, ridx, "low_speed_time", 30, &lst))) return err;
  if ((err = OPT_NUMBER(L, ridx, "low_speed_limit", 1, &lsl))) return err;
  if ((err = OPT_NUMBER(L, ridx, "max_redirects", 5, &maxredir))) return err;
  if ((err = OPT_NUMBER(L, ridx, "max_body", 8.0 * 1024 * 1024, &maxbody))) return err;
  t->timeout = timeout;
  t->low_speed_time = lst < 1 && lst > 0 ? 1 : floor(lst);
  t->low_speed_limit = (long)lsl;
  t->max_redirects = (long)maxredir;
  t->max_body = (size_t)maxbody;

  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)t);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, t->max_redirects);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms(timeout));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms(ctimeout));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, t->low_speed_limit);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)t->low_speed_time);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)t);

  lua_getfield(L, ridx, "user_agent");
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, -1, &len);
    if (has_ctl(s, len)) return "req.user_agent contains control characters";
    curl_easy_setopt(e, CURLOPT_USERAGENT, s);
  } else if (lua_isnil(L, -1)) {
    snprintf(ua, sizeof ua, "taskapi/%s (+libcurl/%s)", TK_VERSION,
             curl_version_info(CURLVERSION_NOW)->version);
    curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
  } else {
    return "req.user_agent must be a string";
  }
  lua_pop(L, 1);

  lua_getfield(L, ridx, "headers");
  if (lua_istable(L, -1)) {
    size_t i, n = tk_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      struct curl_slist *s;
      const char *h;
      lua_rawgeti(L, -1, (int)i);
      if (lua_type(L, -1) != LUA_TSTRING) return "req.headers must be an array of strings";
      h = lua_tolstring(L, -1, &len);
      if (has_ctl(h, len) || !memchr(h, ':', len) || h[0] == ':')
        return "req.headers entries must be \"Name: value\" without CR or LF";
      s = curl_slist_append(t->slist, h);
      if (!s) return "out of memory";
      t->slist = s;
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    return "req.headers must be an array of strings";
  }
  lua_pop(L, 1);

  if ((err = tk_mime_setup(L, ridx, t))) return err;
  if ((err = tk_body_file_setup(L, ridx, t))) return err; /* checks method, body and mime */

  lua_getfield(L, ridx, "method");
  if (lua_type(L, -1) == LUA_TSTRING) method = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1)) return "req.method must be a string";
  lua_getfield(L, ridx, "body");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) return "req.body must be a string";
  if (t->bf.active) {
    /* req.body_file: the PUT or POST body (tk_body_file_setup) */
  } else if (t->mime) {
    /* multipart: CURLOPT_MIMEPOST (set by tk_mime_setup) is the body */
    if (!lua_isnil(L, -1)) return "req.body and req.mime exclude each other";
    if (strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0)
      return "req.mime needs method POST or PUT";
    if (strcmp(method, "PUT") == 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  } else if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    if (!lua_isnil(L, -1)) return "req.body is not allowed with GET";
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (!lua_isnil(L, -1)) return "req.body is not allowed with HEAD";
  } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
             strcmp(method, "DELETE") == 0 || strcmp(method, "PATCH") == 0) {
    if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (lua_type(L, -1) == LUA_TSTRING || strcmp(method, "DELETE") != 0) {
      const char *b = lua_isnil(L, -1) ? "" : lua_tolstring(L, -1, &len);
      if (lua_isnil(L, -1)) len = 0;
      /* the body string stays referenced from the transfer's user value table */
      tk_getuservalue(L, tidx);
      lua_pushvalue(L, -2);
      lua_setfield(L, -2, "body");
      lua_pop(L, 1);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, b);
    }
  } else {
    return "req.method must be GET, POST, HEAD, PUT, DELETE or PATCH";
  }
  lua_pop(L, 2);

  lua_getfield(L, ridx, "ca_file");
  if (lua_type(L, -1) == LUA_TSTRING) curl_easy_setopt(e, CURLOPT_CAINFO, lua_tostring(L, -1));
  else if (!lua_isnil(L, -1)) return "req.ca_file must be a string";
  lua_pop(L, 1);
  lua_getfield(L, ridx, "insecure");
  if (lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1)) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  lua_pop(L, 1);
  /* req.fresh_connect: a new connection, closed after this request. A request that may be
     billed (a create) must not go over a reused connection, since libcurl re-sends a request
     on its own when a reused connection closes before any byte of the answer. */
  lua_getfield(L, ridx, "fresh_connect");
  if (lua_toboolean(L, -1)) {
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  }
  lua_pop(L, 1);
  lua_getfield(L, ridx, "json");
  t->json = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, ridx, "response_headers");
  if (lua_isnil(L, -1)) t->res_headers = 1;
  else if (lua_type(L, -1) == LUA_TBOOLEAN) t->res_headers = lua_toboolean(L, -1);
  else return "req.response_headers must be a boolean";
  lua_pop(L, 1);

  if ((err = tk_dl_setup(L, ridx, t))) return err;
  if (t->dl.active) {
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, tk_dl_write);
    /* Larger receive buffer for files: fewer, bigger writes (curl's own tool uses 100 KiB). */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
  } else {
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, memory_write);
  }
  curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)t);
  if (t->slist) curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->slist);
  return NULL;
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

/* m:add(req) with the multi at 1 and req at 2: pushes the transfer or nil, err. */
static int multi_add(lua_State *L)
{
  tk_multi *m = check_multi(L);
  tk_transfer *t;
  const char *err;
  int tidx;
  CURLMcode mc;
  if (m->closed) return tk_fail_arg(L, "multi handle is closed");
  if (!lua_istable(L, 2)) return tk_fail_arg(L, "req must be a table");
  lua_settop(L, 2);
  t = (tk_transfer *)tk_newuserdata(L, sizeof *t);
  memset(t, 0, sizeof *t);
  t->dl.fd = -1;
  t->state = TK_CLOSED; /* nothing to abort until it is added */
  tidx = lua_gettop(L);
  luaL_getmetatable(L, TK_TRANSFER_MT);
  lua_setmetatable(L, tidx);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "multi");
  tk_setuservalue(L, tidx);
  t->easy = tk_pool_get(m);
  if (!t->easy) {
    transfer_release(t);
    return tk_fail(L, "transport", "curl_easy_init failed", -1, -1, 0);
  }
  err = setup(L, 2, tidx, t);
  if (err) {
    int n;
    lua_settop(L, tidx);
    /* before the release: err may be t's own buffer; a part file that cannot be opened or
       locked (download.c) is an io error, not a bad argument */
    n = t->err_kind ? tk_fail(L, t->err_kind, err, -1, -1, t->err_retryable)
                    : tk_fail_arg(L, "%s", err);
    tk_pool_put(m, t->easy);
    t->easy = NULL;
    transfer_release(t);
    return n;
  }
  lua_settop(L, tidx);
  tk_getuservalue(L, tidx);
  lua_getfield(L, 2, "url"); /* checked by setup: res.effective_url reuses it */
  lua_setfield(L, -2, "url");
  lua_pop(L, 1);
  mc = curl_multi_add_handle(m->cm, t->easy);
  if (mc != CURLM_OK) {
    tk_pool_put(m, t->easy);
    t->easy = NULL;
    transfer_release(t);
    return tk_fail(L, "transport", curl_multi_strerror(mc), -1, -1, 0);
  }
  t->state = TK_RUNNING;
  t->m = m;
  t->next = m->head;
  if (m->head) m->head->prev = t;
  m->head = t;
  m->running++;
  tk_getuservalue(L, 1);
  lua_pushlightuserdata(L, t);
  lua_pushvalue(L, tidx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
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

static int transfer_close_at(lua_State *L, int tidx, tk_transfer *t);

static int multi_request(lua_State *L)
{
  tk_multi *m = check_multi(L);
  tk_transfer *t;
  int n;
  lua_settop(L, 2);
  if (multi_add(L) == 2) return 2;
  t = (tk_transfer *)lua_touserdata(L, 3);
  while (t->state == TK_RUNNING) {
    multi_step(m);
    if (t->state != TK_RUNNING) break;
    tk_socks_wait(m, 1000);
  }
  /* take only our own transfer out of the done list; others stay for completed() */
  if (t->in_done) unlink_done(m, t);
  t->m = NULL;
  multi_forget(L, 1, t);
  n = push_result(L, 3, t);
  transfer_close_at(L, 3, t);
  return n;
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
  return push_result(L, 1, t);
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
  if (hc > 0) curl_multi_setopt(m->cm, CURLMOPT_MAX_HOST_CONNECTIONS, (long)hc);
  if (mc >= 0) curl_multi_setopt(m->cm, CURLMOPT_MAXCONNECTS, (long)mc);
  return 1;
}

static const luaL_Reg multi_methods[] = {
  {"add", multi_add},           {"perform", multi_perform}, {"poll", multi_poll},
  {"completed", multi_completed}, {"request", multi_request}, {"count", multi_count},
  {"close", multi_close},       {NULL, NULL}};

static const luaL_Reg transfer_methods[] = {
  {"progress", transfer_progress}, {"result", transfer_result}, {"cancel", transfer_cancel},
  {"close", transfer_close},       {NULL, NULL}};


void tk_transport_open(lua_State *L)
{
  tk_new_class(L, TK_MULTI_MT, multi_methods, multi_close, multi_tostring);
  tk_new_class(L, TK_TRANSFER_MT, transfer_methods, transfer_close, transfer_tostring);
}
