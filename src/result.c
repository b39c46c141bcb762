/* result.c: what a finished transfer gives Lua: its result table (status, headers, the body
 * or the JSON decoded from it, download fields, timings), or the error table its libcurl
 * code or our own recorded error maps to (kind, retryable, sent, host:port; never the URL's
 * query). Reads the transfer; owns nothing. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "download.h"
#include "errors.h"
#include "json.h"
#include "parse.h"
#include "result.h"
#include "transport.h"

/* One pass over the headers: every field into the table at the top of the stack, and the
 * (last) values of the few fields push_result reads: Content-Type, Retry-After, and the
 * header the request named as its trace id (req.trace_header: the C module knows no
 * provider's header names). */
struct push_ud {
  lua_State *L;
  int table; /* also fill the headers table at the top of the stack */
  const char *ct, *ra, *trace;
  size_t ct_len, ra_len, trace_len;
  const char *want;      /* req.trace_header (any case), or NULL */
  size_t want_len;
};

static int push_fn(const char *name, size_t nlen, const char *val, size_t vlen, void *ud)
{
  struct push_ud *pu = (struct push_ud *)ud;
  lua_State *L = pu->L;
  char low[256];
  size_t k;
  if (nlen >= sizeof low) return 0;
  /* the three fields read below, compared without a lower-case copy */
  if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0) {
    pu->ct = val;
    pu->ct_len = vlen;
  } else if (nlen == 11 && strncasecmp(name, "retry-after", 11) == 0) {
    pu->ra = val;
    pu->ra_len = vlen;
  } else if (pu->want && nlen == pu->want_len && strncasecmp(name, pu->want, nlen) == 0) {
    pu->trace = val;
    pu->trace_len = vlen;
  }
  if (!pu->table) return 0;
  for (k = 0; k < nlen; k++) {
    char c = name[k];
    low[k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  lua_pushlstring(L, low, nlen);
  lua_pushlstring(L, val, vlen);
  lua_rawset(L, -3);
  return 0;
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
void tk_push_transfer_error(lua_State *L, tk_transfer *t)
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
 * table when keep (t:result() may be asked again) and frees the buffers it was built from.
 * tidx 0: a transfer of m:request's own, no userdata (nothing cached; res.effective_url is
 * the string at url_idx when there was no redirect). Returns the number of values pushed. */
int tk_push_result(lua_State *L, int tidx, tk_transfer *t, int keep, int url_idx)
{
  if (tidx) tidx = tk_absindex(L, tidx);
  if (url_idx) url_idx = tk_absindex(L, url_idx);
  if (t->state == TK_RUNNING) return tk_fail(L, "invalid_argument", "not finished", -1, -1, 0);
  if (t->state == TK_CANCELLED)
    return tk_fail(L, "cancelled", "transfer cancelled", -1, -1, 0);
  if (!tidx) {
    lua_pushnil(L); /* in the uservalue table's slot: never read, keep is 0 */
  } else {
    tk_getuservalue(L, tidx); /* an answer kept by an earlier call */
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
  }
  if (t->state == TK_CLOSED) {
    lua_pop(L, 1);
    return tk_fail(L, "invalid_argument", "transfer closed", -1, -1, 0);
  }
  /* uservalue table at the top */
  if (t->err_kind || t->code != CURLE_OK) {
    tk_push_transfer_error(L, t);
    if (keep) {
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, "err");
    }
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
    pu.want = t->trace_hdr_len ? t->trace_hdr : NULL;
    pu.want_len = t->trace_hdr_len;
    if (pu.table) lua_createtable(L, 0, 8);
    tk_header_each(&t->hdr, push_fn, &pu);
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
    } else if (url_idx) { /* no redirect: req.url itself (no new string per call) */
      lua_pushvalue(L, url_idx);
    } else { /* the same, as multi_add kept it */
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
    if (keep) {
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, "res");
    }
    lua_remove(L, -2);
    tk_buf_free(&t->hdr);
    tk_buf_free(&t->body);
    return 1;
  }
}

