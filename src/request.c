/* request.c: building a transfer from a req table: every field checked (a bad one is an
 * invalid_argument message that names it, before anything is sent), the easy handle
 * configured (URL, method, headers, timeouts, limits, TLS, body, download mode), and the
 * libcurl callbacks that keep headers and an in-memory body (they touch C memory only).
 * The transfer owns what is made here (slist, copies of strings); request.c keeps nothing. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "download.h"
#include "errors.h"
#include "mime.h"
#include "request.h"
#include "transport.h"

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

/* The options every libcurl transfer of ours has: url, t as its private pointer, its error
 * buffer and header callback, redirects followed (https ones only from https), the limits. */
static void easy_common(tk_transfer *t, const char *url, int https, long max_redirects,
                        double timeout, double connect_timeout)
{
  CURL *e = t->easy;
  curl_easy_setopt(e, CURLOPT_URL, url); /* libcurl copies strings */
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)t);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, max_redirects);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms(timeout));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms(connect_timeout));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, t->low_speed_limit);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)t->low_speed_time);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)t);
}

/* The rule of a body for each method that takes none: NULL or the message. */
const char *tk_request_body_rule(const char *method, int has_body)
{
  if (!has_body) return NULL;
  if (strcmp(method, "GET") == 0) return "req.body is not allowed with GET";
  if (strcmp(method, "HEAD") == 0) return "req.body is not allowed with HEAD";
  return NULL;
}

/* Reads and checks the fields every transfer has from the req table at ridx into t and r
 * (the strings r points at stay referenced by req). Returns NULL or an invalid_argument
 * message. Nothing is configured yet: tk_request_setup (libcurl) or tk_lean_setup (the
 * plain-HTTP path) does that from r. */
const char *tk_request_read(lua_State *L, int ridx, tk_transfer *t, tk_req *r)
{
  const char *url, *err;
  size_t len;
  double timeout, ctimeout, lst, lsl, maxredir, maxbody;

  memset(r, 0, sizeof *r);
  r->method = "GET";
  lua_getfield(L, ridx, "url");
  if (lua_type(L, -1) != LUA_TSTRING) return "req.url must be a string";
  url = lua_tolstring(L, -1, &len);
  if (has_ctl(url, len)) return "req.url contains control characters";
  r->https = len >= 8 && strncasecmp(url, "https://", 8) == 0;
  if (!r->https && !(len >= 7 && strncasecmp(url, "http://", 7) == 0))
    return "req.url must be an http or https URL";
  t->url = (char *)malloc(len + 1);
  if (!t->url) return "out of memory";
  memcpy(t->url, url, len + 1);
  r->url_len = len;
  lua_pop(L, 1);

  /* req.trace_header: the response header whose value is res.trace_id */
  lua_getfield(L, ridx, "trace_header");
  if (!lua_isnil(L, -1)) {
    size_t n;
    const char *h = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (!h || n == 0 || n > TK_TRACE_HDR_MAX || strcspn(h, " \t\r\n:") != n)
      return "req.trace_header must be a header name (1 to 64 characters, no space or colon)";
    memcpy(t->trace_hdr, h, n + 1); /* compared case-insensitively (result.c) */
    t->trace_hdr_len = n;
  }
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
  r->connect_timeout = ctimeout;

  lua_getfield(L, ridx, "user_agent");
  if (lua_type(L, -1) == LUA_TSTRING) {
    r->ua = lua_tolstring(L, -1, &r->ua_len);
    if (has_ctl(r->ua, r->ua_len)) return "req.user_agent contains control characters";
  } else if (!lua_isnil(L, -1)) {
    return "req.user_agent must be a string";
  }
  lua_pop(L, 1);

  lua_getfield(L, ridx, "headers");
  if (lua_istable(L, -1)) {
    size_t i, n = tk_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      const char *h;
      lua_rawgeti(L, -1, (int)i);
      if (lua_type(L, -1) != LUA_TSTRING) return "req.headers must be an array of strings";
      h = lua_tolstring(L, -1, &len);
      if (has_ctl(h, len) || !memchr(h, ':', len) || h[0] == ':')
        return "req.headers entries must be \"Name: value\" without CR or LF";
      lua_pop(L, 1);
    }
    r->nheaders = n;
  } else if (!lua_isnil(L, -1)) {
    return "req.headers must be an array of strings";
  }
  lua_pop(L, 1);

  lua_getfield(L, ridx, "method");
  if (lua_type(L, -1) == LUA_TSTRING) r->method = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1)) return "req.method must be a string";
  lua_pop(L, 1);
  lua_getfield(L, ridx, "body");
  if (lua_type(L, -1) == LUA_TSTRING) {
    r->body = lua_tolstring(L, -1, &r->body_len);
  } else if (!lua_isnil(L, -1)) {
    return "req.body must be a string";
  }
  lua_pop(L, 1);

  lua_getfield(L, ridx, "ca_file");
  if (lua_type(L, -1) == LUA_TSTRING) r->ca_file = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1)) return "req.ca_file must be a string";
  lua_pop(L, 1);
  lua_getfield(L, ridx, "insecure");
  r->insecure = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, ridx, "fresh_connect");
  r->fresh = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, ridx, "json");
  t->json = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, ridx, "response_headers");
  if (lua_isnil(L, -1)) t->res_headers = 1;
  else if (lua_type(L, -1) == LUA_TBOOLEAN) t->res_headers = lua_toboolean(L, -1);
  else return "req.response_headers must be a boolean";
  lua_pop(L, 1);
  /* a download, a multipart or file body: libcurl's alone */
  lua_getfield(L, ridx, "path");
  lua_getfield(L, ridx, "mime");
  lua_getfield(L, ridx, "body_file");
  r->special = !lua_isnil(L, -1) || !lua_isnil(L, -2) || !lua_isnil(L, -3);
  lua_pop(L, 3);
  return NULL;
}

/* Configures t->easy from r (tk_request_read) and the req table at ridx; the transfer
 * userdata is at tidx (0: none, m:request's own transfer; req keeps the body string).
 * Returns NULL or an invalid_argument message. */
const char *tk_request_setup(lua_State *L, int ridx, int tidx, tk_transfer *t, const tk_req *r)
{
  CURL *e = t->easy;
  const char *method = r->method, *err;
  char ua[128];

  easy_common(t, t->url, r->https, t->max_redirects, t->timeout, r->connect_timeout);
  if (r->ua) {
    curl_easy_setopt(e, CURLOPT_USERAGENT, r->ua);
  } else {
    snprintf(ua, sizeof ua, "taskapi/%s (+libcurl/%s)", TK_VERSION,
             curl_version_info(CURLVERSION_NOW)->version);
    curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
  }

  if (r->nheaders > 0) {
    size_t i;
    lua_getfield(L, ridx, "headers");
    for (i = 1; i <= r->nheaders; i++) {
      struct curl_slist *s;
      lua_rawgeti(L, -1, (int)i);
      s = curl_slist_append(t->slist, lua_tostring(L, -1)); /* checked by tk_request_read */
      if (!s) return "out of memory";
      t->slist = s;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }

  if ((err = tk_mime_setup(L, ridx, t))) return err;
  if ((err = tk_body_file_setup(L, ridx, t))) return err; /* checks method, body and mime */

  if (t->bf.active) {
    /* req.body_file: the PUT or POST body (tk_body_file_setup) */
  } else if (t->mime) {
    /* multipart: CURLOPT_MIMEPOST (set by tk_mime_setup) is the body */
    if (r->body) return "req.body and req.mime exclude each other";
    if (strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0)
      return "req.mime needs method POST or PUT";
    if (strcmp(method, "PUT") == 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  } else if ((err = tk_request_body_rule(method, r->body != NULL))) {
    return err;
  } else if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
             strcmp(method, "DELETE") == 0 || strcmp(method, "PATCH") == 0) {
    if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (r->body || strcmp(method, "DELETE") != 0) {
      /* the body string stays referenced from the transfer's user value table */
      if (r->body && tidx) { /* (tidx 0: m:request's own transfer, req holds the body) */
        tk_getuservalue(L, tidx);
        lua_getfield(L, ridx, "body");
        lua_setfield(L, -2, "body");
        lua_pop(L, 1);
      }
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
    }
  } else {
    return "req.method must be GET, POST, HEAD, PUT, DELETE or PATCH";
  }

  if (r->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, r->ca_file);
  if (r->insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  /* req.fresh_connect: a new connection, closed after this request. A request that may be
     billed (a create) must not go over a reused connection, since libcurl re-sends a request
     on its own when a reused connection closes before any byte of the answer. */
  if (r->fresh) {
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  }

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

/* Configures t->easy for the rest of an API call the plain-HTTP path hands over (lean.c: a
 * redirect to https or to a host name): url, method, the body (copied), the request's header
 * lines hdrs ("Name: value\r\n" each: User-Agent and Accept among them), the transfer's
 * limits, what is left of its timeout. Returns NULL or a message. */
const char *tk_request_setup_handoff(tk_transfer *t, const char *url, const char *method,
                                     const char *body, size_t body_len, int has_body,
                                     const char *hdrs, size_t hdrs_len, double timeout_left,
                                     double connect_timeout, int fresh)
{
  CURL *e = t->easy;
  const char *h = hdrs, *end = hdrs + hdrs_len;
  char line[TK_ERR_MSG_MAX];
  easy_common(t, url, strncasecmp(url, "https://", 8) == 0, t->max_redirects - t->redirects,
              timeout_left, connect_timeout);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, memory_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)t);
  while (h < end) {
    const char *nl = memchr(h, '\r', (size_t)(end - h));
    size_t n = nl ? (size_t)(nl - h) : (size_t)(end - h);
    struct curl_slist *s;
    if (n > 0 && n < sizeof line) {
      memcpy(line, h, n);
      line[n] = '\0';
      s = curl_slist_append(t->slist, line);
      if (!s) return "out of memory";
      t->slist = s;
    }
    h += n + (nl ? 2 : 0);
  }
  if (t->slist) curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->slist);
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (has_body) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
      curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body_len ? body : "");
    }
  }
  if (fresh) {
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  }
  return NULL;
}
