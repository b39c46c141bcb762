/* lean.c: the plain-HTTP path of API calls: our own HTTP/1.1 client with keep-alive for
 * requests to http:// URLs with a numeric host (the fake provider, a local gateway), run in
 * the multi handle next to libcurl, on the same poll() (sockets.c) and done list. What it
 * saves per call is libcurl's URL parsing and rebuilding, its options set and reset, and its
 * request formatting: the request's bytes are built once here and written with one send.
 * Everything else (https, host names, proxies, downloads, uploads, a redirect to any of
 * those) stays libcurl's: a transfer that cannot be served here is never started here, and
 * one redirected to https or to a host name is handed over to libcurl (handoff()).
 * Errors take libcurl's codes (result.c maps them the same way for both): refused,
 * timeouts, stalls, an empty or malformed reply, a connection closed early. A kept-alive
 * connection found closed before any byte of the answer is replaced once, as libcurl does,
 * except for req.fresh_connect (a create: sent once, on a new connection, closed after).
 * Ownership: a transfer owns its socket and request buffer while it runs; a finished
 * response's reusable socket goes to the multi's idle list (m->idle), which owns it until it
 * is taken again or closed (tk_lean_free, an idle one found dead or too old). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "http1.h"
#include "lean.h"
#include "parse.h"
#include "pool.h"
#include "sockets.h"

#define TK_LEAN_IDLE 128          /* idle connections a multi keeps by default */
#define TK_LEAN_SCRATCH 16384     /* bytes of one read */
#define TK_LEAN_MAX_AGE_MS 118000 /* an idle connection older than this is closed (libcurl's) */
#define TK_LEAN_MAX_FIELDS 1000   /* header fields of one response */
#define TK_LEAN_CHECK_MS 1000     /* an idle connection older than this is checked before use */

struct tk_conn {
  int fd;
  socklen_t alen;
  long long since;
  tk_addr addr;
};

enum { L_CONNECT = 1, L_SEND, L_HEAD, L_BODY };
enum { B_NONE = 0, B_LEN, B_CHUNKED, B_CLOSE };

/* ---------------------------------------------------------------- the multi's part */

void tk_lean_init(tk_multi *m, long max_host_connections, long max_connects)
{
  /* libcurl reads these for http:// URLs (http_proxy in lower case only) */
  const char *px = getenv("http_proxy");
  const char *ax = getenv("all_proxy");
  const char *aX = getenv("ALL_PROXY");
  m->lean_ok = !(px && *px) && !(ax && *ax) && !(aX && *aX) && max_host_connections <= 0;
  m->max_idle = max_connects >= 0 ? (max_connects < TK_LEAN_IDLE ? (int)max_connects : TK_LEAN_IDLE)
                                  : TK_LEAN_IDLE;
  snprintf(m->ua, sizeof m->ua, "taskapi/%s (+libcurl/%s)", TK_VERSION,
           curl_version_info(CURLVERSION_NOW)->version);
}

void tk_lean_free(tk_multi *m)
{
  int i;
  for (i = 0; i < m->nidle; i++) close(m->idle[i].fd);
  free(m->idle);
  m->idle = NULL;
  m->nidle = 0;
  free(m->scratch);
  m->scratch = NULL;
}

static void idle_drop(tk_multi *m, int i)
{
  m->nidle--;
  memmove(&m->idle[i], &m->idle[i + 1], (size_t)(m->nidle - i) * sizeof m->idle[0]);
}

/* A live idle connection to addr, or -1. One found closed by the server (readable: EOF or
 * bytes nobody asked for) or older than TK_LEAN_MAX_AGE_MS is closed on the way. */
static int idle_take(tk_multi *m, const tk_addr *addr, socklen_t alen)
{
  int i;
  long long now = -1;
  for (i = m->nidle - 1; i >= 0; i--) {
    struct tk_conn *c = &m->idle[i];
    char b;
    ssize_t n;
    int fd;
    long long since;
    if (c->alen != alen || memcmp(&c->addr, addr, alen) != 0) continue;
    since = c->since;
    fd = c->fd;
    if (now < 0) now = tk_monotonic_ms();
    idle_drop(m, i); /* c points at the next entry from here */
    if (now - since > TK_LEAN_MAX_AGE_MS) {
      close(fd);
      continue;
    }
    /* idle under a second: taken as it is (a server that closed it since is answered by
       one new connection, see ended()); older ones are checked first, as libcurl does */
    if (now - since < TK_LEAN_CHECK_MS) return fd;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return fd;
    close(fd);
  }
  return -1;
}

static void idle_put(tk_multi *m, int fd, const tk_addr *addr, socklen_t alen)
{
  struct tk_conn *c;
  if (m->closed || m->max_idle <= 0) {
    close(fd);
    return;
  }
  if (!m->idle) {
    m->idle = (struct tk_conn *)malloc((size_t)m->max_idle * sizeof *m->idle);
    if (!m->idle) {
      close(fd);
      return;
    }
  }
  if (m->nidle == m->max_idle) { /* the oldest makes room */
    close(m->idle[0].fd);
    idle_drop(m, 0);
  }
  c = &m->idle[m->nidle++];
  c->fd = fd;
  c->alen = alen;
  c->since = tk_monotonic_ms();
  memcpy(&c->addr, addr, alen);
}

/* ---------------------------------------------------------------- URLs and requests */

/* The parts of an http:// URL this path can serve: a numeric host (IPv4, or IPv6 in
 * brackets), the port, the Host header's value and the request target. Returns 0, or -1
 * when the URL is not for this path (https, a host name, user info, a bad port). */
struct lean_url {
  tk_addr addr;
  socklen_t alen;
  const char *host; size_t host_len; /* the authority as the Host header gives it */
  const char *path; size_t path_len; /* "" stands for "/" */
  const char *query; size_t query_len; /* from '?' (included), or empty */
};

static int parse_url(const char *url, size_t len, struct lean_url *u)
{
  const char *a, *end = url + len, *p, *hs, *he, *ps;
  char host[64];
  long port = 80;
  memset(u, 0, sizeof *u);
  if (len < 7 || strncasecmp(url, "http://", 7) != 0) return -1;
  a = url + 7;
  for (p = a; p < end && *p != '/' && *p != '?' && *p != '#'; p++)
    if (*p == '@') return -1; /* user info: libcurl's (it sends Basic auth) */
  u->host = a;
  u->host_len = (size_t)(p - a);
  /* the host and the port */
  if (a < p && *a == '[') {
    hs = a + 1;
    he = memchr(hs, ']', (size_t)(p - hs));
    if (!he) return -1;
    ps = he + 1;
  } else {
    hs = a;
    he = memchr(a, ':', (size_t)(p - a));
    if (!he) he = p;
    ps = he;
  }
  if (he == hs || (size_t)(he - hs) >= sizeof host) return -1;
  memcpy(host, hs, (size_t)(he - hs));
  host[he - hs] = '\0';
  if (ps < p) {
    const char *q;
    if (*ps != ':' || ps + 1 == p || p - ps > 6) return -1;
    port = 0;
    for (q = ps + 1; q < p; q++) {
      if (*q < '0' || *q > '9') return -1;
      port = port * 10 + (*q - '0');
    }
    if (port < 1 || port > 65535) return -1;
  }
  memset(&u->addr, 0, sizeof u->addr);
  if (*a == '[') {
    struct sockaddr_in6 *s6 = &u->addr.v6;
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) return -1;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((unsigned short)port);
    u->alen = sizeof *s6;
  } else {
    struct sockaddr_in *s4 = &u->addr.v4;
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) return -1; /* a host name */
    s4->sin_family = AF_INET;
    s4->sin_port = htons((unsigned short)port);
    u->alen = sizeof *s4;
  }
  /* the target: path and query, without the fragment */
  {
    const char *hash = memchr(p, '#', (size_t)(end - p));
    const char *stop = hash ? hash : end, *qm;
    qm = memchr(p, '?', (size_t)(stop - p));
    u->path = p;
    u->path_len = (size_t)((qm ? qm : stop) - p);
    u->query = qm ? qm : stop;
    u->query_len = (size_t)(stop - u->query);
  }
  return 0;
}

static int name_is(const char *h, size_t nlen, const char *name)
{
  return strlen(name) == nlen && strncasecmp(h, name, nlen) == 0;
}

/* A header line "Name: value": the name's length and the value trimmed. */
static size_t header_name(const char *h, size_t len, const char **v, size_t *vlen)
{
  const char *c = memchr(h, ':', len);
  size_t n = (size_t)(c - h);
  *v = c + 1;
  *vlen = len - n - 1;
  tk_parse_trim(v, vlen);
  while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
  return n;
}

static int put(tk_buf *b, const char *p, size_t n) { return tk_buf_append(b, p, n); }
static int puts0(tk_buf *b, const char *s) { return tk_buf_append(b, s, strlen(s)); }

/* Writes the request into l->req: the request line, Host, then hdrs (User-Agent, Accept
 * and the caller's headers, each "Name: value\r\n"), Content-Length when the method sends
 * a body, the empty line and the body. Returns 0 or -1 (out of memory). */
static int build(tk_lean *l, const struct lean_url *u, const char *hdrs, size_t hdrs_len,
                 const char *body, size_t body_len)
{
  tk_buf *b = &l->req;
  char cl[48];
  b->len = 0;
  if (puts0(b, l->method) || put(b, " ", 1)) return -1;
  if (u->path_len == 0) {
    if (put(b, "/", 1)) return -1;
  } else if (put(b, u->path, u->path_len)) {
    return -1;
  }
  if (put(b, u->query, u->query_len) || put(b, " HTTP/1.1\r\n", 11)) return -1;
  if (!l->user_host && (put(b, "Host: ", 6) || put(b, u->host, u->host_len) || put(b, "\r\n", 2)))
    return -1;
  l->hdrs_at = b->len;
  l->hdrs_len = hdrs_len;
  if (put(b, hdrs, hdrs_len)) return -1;
  if (l->framed) {
    int n = snprintf(cl, sizeof cl, "Content-Length: %lu\r\n", (unsigned long)body_len);
    if (put(b, cl, (size_t)n)) return -1;
  }
  if (put(b, "\r\n", 2)) return -1;
  l->body_at = b->len;
  return put(b, body, body_len);
}

/* The method names this path sends, as literals the transfer can keep; NULL for another. */
static const char *method_of(const char *name)
{
  static const char *const names[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH"};
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(name, names[i]) == 0) return names[i];
  return NULL;
}

static int method_framed(const char *method, int has_body)
{
  return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
         strcmp(method, "PATCH") == 0 || (strcmp(method, "DELETE") == 0 && has_body);
}

int tk_lean_setup(lua_State *L, int ridx, tk_multi *m, tk_transfer *t, const tk_req *r)
{
  struct lean_url u;
  tk_buf hdrs = {0};
  const char *method;
  int user_ua = 0, user_accept = 0, user_host = 0, rc = 0;
  size_t i;
  tk_lean *l = &t->lean;
  if (!m->lean_ok || r->https || r->special || r->ca_file || r->insecure ||
      t->low_speed_limit > 1)
    return 0;
  method = method_of(r->method);
  if (!method) return 0; /* libcurl's setup names the problem */
  if (tk_request_body_rule(method, r->body != NULL)) return 0; /* likewise */
  if (parse_url(t->url, r->url_len, &u) != 0) return 0;
  /* the caller's headers: a name given replaces ours; "Name:" without a value sends none
     (libcurl's rules); framing of their own (Transfer-Encoding, Expect) is libcurl's */
  if (r->nheaders > 0) {
    lua_getfield(L, ridx, "headers");
    for (i = 1; i <= r->nheaders && rc == 0; i++) {
      size_t len, n, vlen;
      const char *h, *v;
      lua_rawgeti(L, -1, (int)i);
      h = lua_tolstring(L, -1, &len); /* checked by tk_request_read */
      n = header_name(h, len, &v, &vlen);
      if (name_is(h, n, "transfer-encoding") || (name_is(h, n, "expect") && vlen > 0)) rc = 1;
      else if (name_is(h, n, "content-length")) { /* ours is the body's */ }
      else {
        if (name_is(h, n, "user-agent")) user_ua = 1;
        else if (name_is(h, n, "accept")) user_accept = 1;
        else if (name_is(h, n, "host")) user_host = vlen > 0;
        if (vlen > 0 && (put(&hdrs, h, len) || put(&hdrs, "\r\n", 2))) rc = -1;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (rc != 0) {
      tk_buf_free(&hdrs);
      return rc == 1 ? 0 : -1;
    }
  }
  {
    /* User-Agent and Accept go first, the caller's headers after them */
    tk_buf all = {0};
    int bad = 0;
    if (!user_ua) {
      bad |= put(&all, "User-Agent: ", 12);
      bad |= r->ua ? put(&all, r->ua, r->ua_len) : puts0(&all, m->ua);
      bad |= put(&all, "\r\n", 2);
    }
    if (!user_accept) bad |= put(&all, "Accept: */*\r\n", 13);
    bad |= put(&all, hdrs.data ? hdrs.data : "", hdrs.len);
    tk_buf_free(&hdrs);
    l->method = method;
    l->user_host = user_host;
    l->framed = method_framed(method, r->body != NULL);
    if (!bad)
      bad = build(l, &u, all.data ? all.data : "", all.len, r->body ? r->body : "",
                  r->body ? r->body_len : 0);
    tk_buf_free(&all);
    if (bad) {
      tk_buf_free(&l->req);
      return -1;
    }
  }
  l->active = 1;
  l->fd = -1;
  l->fresh = r->fresh;
  l->head_only = strcmp(method, "HEAD") == 0;
  l->addr = u.addr;
  l->alen = u.alen;
  l->start_ms = tk_monotonic_ms();
  l->deadline_ms = t->timeout > 0 ? l->start_ms + (long long)ceil(t->timeout * 1000) : -1;
  l->connect_ms = (long long)ceil((r->connect_timeout > 0 ? r->connect_timeout : 300) * 1000);
  l->stall_ms = t->low_speed_time > 0 && t->low_speed_limit > 0 ? (long long)(t->low_speed_time * 1000) : -1;
  t->request_size = 0;
  return 1;
}

/* ---------------------------------------------------------------- finishing */

static void close_fd(tk_multi *m, tk_lean *l)
{
  if (l->fd < 0) return;
  tk_socks_unwatch(&m->socks, l->fd);
  close(l->fd);
  l->fd = -1;
}

/* t ends with code (libcurl's, CURLE_OK for a response); the socket is closed or kept. */
static void finish(tk_multi *m, tk_transfer *t, CURLcode code)
{
  tk_lean *l = &t->lean;
  long long now = tk_monotonic_ms();
  if (l->fd >= 0) {
    if (code == CURLE_OK && !t->err_kind && l->keep && !l->fresh) {
      tk_socks_unwatch(&m->socks, l->fd);
      idle_put(m, l->fd, &l->addr, l->alen);
      l->fd = -1;
    } else {
      close_fd(m, l);
    }
  }
  t->code = code;
  t->total_time = (double)(now - l->start_ms) / 1000.0;
  t->final_done = (long long)t->body.len;
  t->final_total = l->clen > 0 ? l->clen : 0;
  t->done_at = time(NULL);
  tk_buf_free(&l->req);
  m->lean_running--;
  tk_transfer_done(m, t);
}

static void fail(tk_multi *m, tk_transfer *t, CURLcode code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->errbuf, sizeof t->errbuf, fmt, ap);
  va_end(ap);
  finish(m, t, code);
}

/* an error of our own (a limit): recorded on t, which ends */
static void fail_own(tk_multi *m, tk_transfer *t)
{
  close_fd(m, &t->lean);
  finish(m, t, CURLE_OK);
}

static void host_text(const tk_lean *l, char *out, size_t n, int *port)
{
  if (l->addr.sa.sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = &l->addr.v6;
    inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)n);
    *port = ntohs(s6->sin6_port);
  } else {
    const struct sockaddr_in *s4 = &l->addr.v4;
    inet_ntop(AF_INET, &s4->sin_addr, out, (socklen_t)n);
    *port = ntohs(s4->sin_port);
  }
}

static void fail_connect(tk_multi *m, tk_transfer *t, int err)
{
  char h[64];
  int port;
  host_text(&t->lean, h, sizeof h, &port);
  fail(m, t, CURLE_COULDNT_CONNECT, "Failed to connect to %s port %d after %lld ms: %s", h, port,
       tk_monotonic_ms() - t->lean.start_ms, strerror(err));
}

/* ---------------------------------------------------------------- connecting, sending */

static void connect_now(tk_multi *m, tk_transfer *t);

static void send_some(tk_multi *m, tk_transfer *t)
{
  tk_lean *l = &t->lean;
  while (l->sent < l->req.len) {
    ssize_t n = send(l->fd, l->req.data + l->sent, l->req.len - l->sent, MSG_NOSIGNAL);
    if (n > 0) {
      l->sent += (size_t)n;
      t->request_size = (long)l->sent;
      l->last_ms = tk_monotonic_ms();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (tk_socks_watch(&m->socks, l->fd, POLLOUT, t) != 0) fail(m, t, CURLE_OUT_OF_MEMORY, "out of memory");
      return;
    }
    if (l->reused && !l->retried && !l->fresh) { /* a kept-alive connection the server closed */
      l->retried = 1;
      close_fd(m, l);
      connect_now(m, t);
      return;
    }
    fail(m, t, CURLE_SEND_ERROR, "Send failure: %s", strerror(n < 0 ? errno : EPIPE));
    return;
  }
  l->state = L_HEAD;
  if (tk_socks_watch(&m->socks, l->fd, POLLIN, t) != 0) fail(m, t, CURLE_OUT_OF_MEMORY, "out of memory");
}

/* A new connection to the server (never an idle one). */
static void connect_now(tk_multi *m, tk_transfer *t)
{
  tk_lean *l = &t->lean;
  int one = 1, fd;
  l->reused = 0;
  l->sent = 0;
  l->got = 0;
  t->request_size = 0;
  fd = socket(l->addr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fail_connect(m, t, errno);
    return;
  }
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  l->fd = fd;
  l->last_ms = tk_monotonic_ms();
  if (connect(fd, &l->addr.sa, l->alen) == 0) {
    l->state = L_SEND;
    send_some(m, t);
    return;
  }
  if (errno == EINPROGRESS || errno == EINTR) {
    l->state = L_CONNECT;
    if (tk_socks_watch(&m->socks, fd, POLLOUT, t) != 0) fail(m, t, CURLE_OUT_OF_MEMORY, "out of memory");
    return;
  }
  {
    int e = errno;
    close(fd);
    l->fd = -1;
    fail_connect(m, t, e);
  }
}

/* An idle connection to the server when there is one (not for fresh_connect), else a new one. */
static void connect_any(tk_multi *m, tk_transfer *t)
{
  tk_lean *l = &t->lean;
  int fd = l->fresh ? -1 : idle_take(m, &l->addr, l->alen);
  if (fd < 0) {
    connect_now(m, t);
    return;
  }
  l->fd = fd;
  l->reused = 1;
  l->sent = 0;
  l->got = 0;
  l->last_ms = tk_monotonic_ms();
  l->state = L_SEND;
  send_some(m, t);
}

void tk_lean_start(tk_multi *m, tk_transfer *t)
{
  connect_any(m, t);
}

/* ---------------------------------------------------------------- the response */

static int body_sink(const char *p, size_t n, void *ud)
{
  tk_transfer *t = (tk_transfer *)ud;
  if (t->body.len + n > t->max_body) {
    tk_set_err(t, "bad_response", 0, "response body larger than %lu bytes", (unsigned long)t->max_body);
    return 1;
  }
  if (tk_buf_append(&t->body, p, n) != 0) {
    tk_set_err(t, "io", 0, "out of memory");
    return 1;
  }
  return 0;
}

static void complete(tk_multi *m, tk_transfer *t) { finish(m, t, CURLE_OK); }

/* The body bytes p[0..n) of the current response. */
static void body_feed(tk_multi *m, tk_transfer *t, const char *p, size_t n)
{
  tk_lean *l = &t->lean;
  switch (l->body_mode) {
  case B_NONE:
    if (n > 0) l->keep = 0;
    complete(m, t);
    return;
  case B_LEN: {
    size_t want = (size_t)(l->clen - (long long)t->body.len);
    if (n > want) {
      l->keep = 0; /* bytes after the body: not a connection to reuse */
      n = want;
    }
    if (n && body_sink(p, n, t)) {
      fail_own(m, t);
      return;
    }
    if ((long long)t->body.len == l->clen) complete(m, t);
    return;
  }
  case B_CHUNKED: {
    size_t used = 0;
    int r = tk_h1_chunked_feed(&l->ch, p, n, &used, body_sink, t);
    if (r == 1) {
      if (used < n) l->keep = 0;
      complete(m, t);
    } else if (r == TK_H1_SINK) {
      fail_own(m, t);
    } else if (r == TK_H1_BAD) {
      fail(m, t, CURLE_RECV_ERROR, "malformed chunked encoding in the response");
    }
    return;
  }
  default: /* B_CLOSE: to the end of the connection */
    if (n && body_sink(p, n, t)) fail_own(m, t);
    return;
  }
}

static int is_redirect(long status)
{
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static void follow(tk_multi *m, tk_transfer *t, const char *loc, size_t loc_len);

/* The head in t->hdr is complete (hl bytes); what follows it is the body's. */
static void head_done(tk_multi *m, tk_transfer *t, const tk_h1_head *h, long hl)
{
  tk_lean *l = &t->lean;
  size_t rest = t->hdr.len - (size_t)hl;
  t->status = h->status;
  l->keep = !h->close;
  l->clen = h->clen;
  if (is_redirect(h->status) && h->location && h->location_len > 0) {
    follow(m, t, h->location, h->location_len);
    return;
  }
  t->hdr.len = (size_t)hl; /* the body bytes stay behind it in the buffer until fed */
  l->state = L_BODY;
  if (l->head_only || h->status == 204 || h->status == 304) {
    l->body_mode = B_NONE;
  } else if (h->chunked) {
    l->body_mode = B_CHUNKED;
    if (h->clen >= 0) l->keep = 0;
    l->clen = -1;
  } else if (h->clen >= 0) {
    if ((unsigned long long)h->clen > (unsigned long long)t->max_body) {
      tk_set_err(t, "bad_response", 0, "response body larger than %lu bytes", (unsigned long)t->max_body);
      fail_own(m, t);
      return;
    }
    l->body_mode = B_LEN;
    if (h->clen == 0) {
      if (rest > 0) l->keep = 0;
      complete(m, t);
      return;
    }
  } else {
    l->body_mode = B_CLOSE;
    l->keep = 0;
  }
  body_feed(m, t, t->hdr.data + hl, rest);
}

/* Bytes p[0..n) of the response. */
static void feed(tk_multi *m, tk_transfer *t, const char *p, size_t n)
{
  tk_lean *l = &t->lean;
  if (l->state == L_BODY) {
    body_feed(m, t, p, n);
    return;
  }
  if (t->hdr.len + n > TK_MAX_HEADER_BYTES + TK_LEAN_SCRATCH) {
    tk_set_err(t, "bad_response", 0, "response headers larger than %u bytes", TK_MAX_HEADER_BYTES);
    fail_own(m, t);
    return;
  }
  if (tk_buf_append(&t->hdr, p, n) != 0) {
    tk_set_err(t, "io", 0, "out of memory");
    fail_own(m, t);
    return;
  }
  for (;;) {
    tk_h1_head h;
    const char *why;
    long hl = tk_h1_head_parse(t->hdr.data, t->hdr.len, TK_MAX_HEADER_BYTES, TK_LEAN_MAX_FIELDS, &h, &why);
    if (hl == TK_H1_MORE) return;
    if (hl == TK_H1_BIG) {
      if (strcmp(why, "too many header fields") == 0)
        tk_set_err(t, "bad_response", 0, "more than %d header fields in the response", TK_LEAN_MAX_FIELDS);
      else
        tk_set_err(t, "bad_response", 0, "response headers larger than %u bytes", TK_MAX_HEADER_BYTES);
      fail_own(m, t);
      return;
    }
    if (hl == TK_H1_BAD) {
      fail(m, t, CURLE_WEIRD_SERVER_REPLY, "malformed response: %s", why);
      return;
    }
    if (h.status >= 100 && h.status < 200 && h.status != 101) { /* interim: the next head */
      size_t rest = t->hdr.len - (size_t)hl;
      memmove(t->hdr.data, t->hdr.data + hl, rest);
      t->hdr.len = rest;
      if (rest == 0) return;
      continue;
    }
    head_done(m, t, &h, hl);
    return;
  }
}

/* The server closed the connection (err 0) or it failed (err: errno). */
static void ended(tk_multi *m, tk_transfer *t, int err)
{
  tk_lean *l = &t->lean;
  if (l->state == L_HEAD && !l->got) {
    if (l->reused && !l->retried && !l->fresh) { /* a kept-alive connection the server closed */
      l->retried = 1;
      close_fd(m, l);
      connect_now(m, t);
      return;
    }
    if (err) fail(m, t, CURLE_RECV_ERROR, "Recv failure: %s", strerror(err));
    else fail(m, t, CURLE_GOT_NOTHING, "Empty reply from server");
    return;
  }
  if (l->state == L_HEAD) {
    fail(m, t, CURLE_RECV_ERROR, "connection closed in the middle of the response headers%s%s",
         err ? ": " : "", err ? strerror(err) : "");
    return;
  }
  if (err) {
    fail(m, t, CURLE_RECV_ERROR, "Recv failure: %s", strerror(err));
    return;
  }
  switch (l->body_mode) {
  case B_CLOSE: case B_NONE:
    l->keep = 0;
    complete(m, t);
    return;
  case B_LEN:
    fail(m, t, CURLE_PARTIAL_FILE, "transfer closed with %lld bytes remaining to read",
         l->clen - (long long)t->body.len);
    return;
  default:
    fail(m, t, CURLE_PARTIAL_FILE, "transfer closed with outstanding read data remaining");
    return;
  }
}

static void read_some(tk_multi *m, tk_transfer *t)
{
  tk_lean *l = &t->lean;
  if (!m->scratch) {
    m->scratch = (char *)malloc(TK_LEAN_SCRATCH);
    if (!m->scratch) {
      fail(m, t, CURLE_OUT_OF_MEMORY, "out of memory");
      return;
    }
  }
  for (;;) {
    ssize_t n = recv(l->fd, m->scratch, TK_LEAN_SCRATCH, 0);
    if (n > 0) {
      l->got = 1;
      l->last_ms = tk_monotonic_ms();
      feed(m, t, m->scratch, (size_t)n);
      if (t->state != TK_RUNNING || l->state < L_HEAD) return; /* done, or a redirect's new connection */
      if ((size_t)n < TK_LEAN_SCRATCH) return; /* drained, most likely: poll() says when more comes */
      continue;
    }
    if (n == 0) {
      ended(m, t, 0);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    ended(m, t, errno);
    return;
  }
}

void tk_lean_io(tk_multi *m, tk_transfer *t, int ev)
{
  tk_lean *l = &t->lean;
  if (t->state != TK_RUNNING || !l->active || l->fd < 0) return;
  switch (l->state) {
  case L_CONNECT: {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0 && !(ev & (CURL_CSELECT_OUT | CURL_CSELECT_ERR))) return;
    if (err) {
      close_fd(m, l);
      fail_connect(m, t, err);
      return;
    }
    l->state = L_SEND;
    send_some(m, t);
    return;
  }
  case L_SEND:
    send_some(m, t);
    return;
  default:
    read_some(m, t);
    return;
  }
}

/* ---------------------------------------------------------------- redirects */

/* The URL Location points to from base (RFC 3986's cases that servers use), malloc'd. */
static char *resolve(const char *base, const char *loc, size_t n)
{
  const char *p, *auth_end, *path_end, *dir_end;
  size_t sl;
  char *out;
  for (p = loc; p < loc + n && *p != ':' && *p != '/' && *p != '?' && *p != '#'; p++) {}
  if (p < loc + n && *p == ':' && p > loc) { /* absolute */
    out = (char *)malloc(n + 1);
    if (out) { memcpy(out, loc, n); out[n] = '\0'; }
    return out;
  }
  p = strstr(base, "://");
  if (!p) return NULL;
  sl = (size_t)(p - base);
  auth_end = p + 3 + strcspn(p + 3, "/?#");
  path_end = auth_end + strcspn(auth_end, "?#");
  dir_end = path_end;
  while (dir_end > auth_end && dir_end[-1] != '/') dir_end--;
  out = (char *)malloc(strlen(base) + n + 3);
  if (!out) return NULL;
  if (n >= 2 && loc[0] == '/' && loc[1] == '/') { /* scheme-relative */
    memcpy(out, base, sl + 1);
    memcpy(out + sl + 1, loc, n);
    out[sl + 1 + n] = '\0';
  } else if (n >= 1 && loc[0] == '/') {
    size_t a = (size_t)(auth_end - base);
    memcpy(out, base, a);
    memcpy(out + a, loc, n);
    out[a + n] = '\0';
  } else if (n >= 1 && loc[0] == '?') {
    size_t a = (size_t)(path_end - base);
    memcpy(out, base, a);
    if (path_end == auth_end) out[a++] = '/';
    memcpy(out + a, loc, n);
    out[a + n] = '\0';
  } else {
    size_t a = (size_t)(dir_end - base);
    memcpy(out, base, a);
    if (dir_end == auth_end) out[a++] = '/';
    memcpy(out + a, loc, n);
    out[a + n] = '\0';
  }
  return out;
}

/* The request's header lines (User-Agent, Accept, the caller's) into out for the next request
 * of a redirect: all of them to the same origin; to another, none of those that stay with
 * their origin (Authorization, Cookie, Host). 0, or -1 when out of memory. */
static int copy_headers(const tk_lean *l, int same, tk_buf *out)
{
  const char *h = l->req.data + l->hdrs_at, *e = h + l->hdrs_len;
  while (h < e) {
    const char *nl = memchr(h, '\n', (size_t)(e - h)), *v;
    size_t len = nl ? (size_t)(nl + 1 - h) : (size_t)(e - h), vlen, n;
    int keep = same || !memchr(h, ':', len);
    if (!keep) {
      n = header_name(h, len, &v, &vlen);
      keep = !(name_is(h, n, "authorization") || name_is(h, n, "cookie") || name_is(h, n, "host"));
    }
    if (keep && put(out, h, len)) return -1;
    h += len;
  }
  return 0;
}

/* The rest of t goes to libcurl: a redirect to https or to a host name. The caller's
 * header lines go along without those that stay with their origin (another one, always). */
static void handoff(tk_multi *m, tk_transfer *t, const char *target, const char *method,
                    size_t body_len, int has_body)
{
  tk_lean *l = &t->lean;
  tk_buf hdrs = {0};
  const char *err = copy_headers(l, 0, &hdrs) ? "out of memory" : NULL;
  long long now = tk_monotonic_ms();
  double left = 0;
  CURLMcode mc;
  if (l->deadline_ms >= 0) {
    left = (double)(l->deadline_ms - now) / 1000.0;
    if (left < 0.002) left = 0.002; /* 0 would be "no timeout" */
  }
  t->easy = err ? NULL : tk_pool_get(m);
  if (!err && !t->easy) err = "curl_easy_init failed";
  if (!err)
    err = tk_request_setup_handoff(t, target, method, l->req.data + l->req.len - body_len, body_len,
                                   has_body, hdrs.data ? hdrs.data : "", hdrs.len, left,
                                   (double)l->connect_ms / 1000.0, l->fresh);
  tk_buf_free(&hdrs);
  if (err) {
    tk_pool_put(m, t->easy);
    t->easy = NULL;
    fail(m, t, CURLE_OUT_OF_MEMORY, "%s", err);
    return;
  }
  close_fd(m, l);
  tk_buf_free(&l->req);
  l->active = 0; /* libcurl's from here: transfer_finish settles it */
  m->lean_running--;
  m->n_handed++;
  l->handed_hops = t->redirects + 1;
  l->handed_time = (double)(now - l->start_ms) / 1000.0;
  t->redirects = 0;
  t->hdr.len = 0;
  t->body.len = 0;
  t->status = 0;
  mc = curl_multi_add_handle(m->cm, t->easy);
  if (mc != CURLM_OK) {
    tk_set_err(t, "transport", 0, "%s", curl_multi_strerror(mc));
    tk_pool_put(m, t->easy);
    t->easy = NULL;
    t->code = CURLE_OK;
    t->done_at = time(NULL);
    tk_transfer_done(m, t);
  }
}

static void follow(tk_multi *m, tk_transfer *t, const char *loc, size_t loc_len)
{
  tk_lean *l = &t->lean;
  const char *cur = t->effective_url ? t->effective_url : t->url;
  char *target;
  const char *method = l->method;
  struct lean_url u;
  size_t i;
  tk_buf hdrs = {0};
  int same, bad, has_body = l->framed;
  size_t body_len = l->req.len - l->body_at;
  if (t->redirects >= t->max_redirects) {
    fail(m, t, CURLE_TOO_MANY_REDIRECTS, "Maximum (%ld) redirects followed", t->max_redirects);
    return;
  }
  target = resolve(cur, loc, loc_len);
  if (!target) {
    fail(m, t, CURLE_OUT_OF_MEMORY, "out of memory");
    return;
  }
  for (i = 0; target[i]; i++)
    if (target[i] == '\r' || target[i] == '\n') {
      free(target);
      fail(m, t, CURLE_WEIRD_SERVER_REPLY, "malformed Location in the response");
      return;
    }
  /* the method: 303 (but HEAD), and 301 or 302 after a POST, become GET without a body */
  if ((t->status == 303 && strcmp(method, "HEAD") != 0) ||
      ((t->status == 301 || t->status == 302) && strcmp(method, "POST") == 0)) {
    method = method_of("GET");
    body_len = 0;
    has_body = 0;
  }
  if (parse_url(target, strlen(target), &u) != 0) {
    const char *c = strstr(target, "://");
    size_t sl = c ? (size_t)(c - target) : 0;
    if ((sl == 4 && strncasecmp(target, "http", 4) == 0) || (sl == 5 && strncasecmp(target, "https", 5) == 0))
      handoff(m, t, target, method, body_len, has_body); /* https, a host name: libcurl's */
    else
      fail(m, t, CURLE_UNSUPPORTED_PROTOCOL, "Protocol \"%.*s\" not supported or disabled in libcurl",
           (int)(sl < 40 ? sl : 40), target);
    free(target);
    return;
  }
  /* the caller's headers go along; to another origin without Authorization, Cookie, Host */
  same = u.alen == l->alen && memcmp(&u.addr, &l->addr, u.alen) == 0;
  bad = copy_headers(l, same, &hdrs);
  {
    tk_buf old = l->req;
    size_t old_body = l->body_at;
    memset(&l->req, 0, sizeof l->req);
    l->method = method;
    l->framed = has_body;
    l->user_host = same && l->user_host; /* another origin gets our Host */
    if (!bad)
      bad = build(l, &u, hdrs.data ? hdrs.data : "", hdrs.len, old.data + old_body, body_len);
    tk_buf_free(&old);
  }
  tk_buf_free(&hdrs);
  if (bad) {
    free(target);
    fail(m, t, CURLE_OUT_OF_MEMORY, "out of memory");
    return;
  }
  free(t->effective_url);
  t->effective_url = target;
  t->redirects++;
  close_fd(m, l); /* the redirect's own body is not read: its connection is not reused */
  l->addr = u.addr;
  l->alen = u.alen;
  l->head_only = strcmp(method, "HEAD") == 0;
  l->retried = 0;
  l->clen = -1;
  memset(&l->ch, 0, sizeof l->ch);
  t->hdr.len = 0;
  t->body.len = 0;
  t->status = 0;
  connect_any(m, t);
}

/* ---------------------------------------------------------------- timers, abort */

static long long due_of(const tk_lean *l)
{
  long long d = l->deadline_ms;
  if (l->state == L_CONNECT) {
    long long c = l->start_ms + l->connect_ms;
    if (d < 0 || c < d) d = c;
  }
  if (l->stall_ms > 0) {
    long long s = l->last_ms + l->stall_ms;
    if (d < 0 || s < d) d = s;
  }
  return d;
}

void tk_lean_timers(tk_multi *m)
{
  long long now = tk_monotonic_ms();
  tk_transfer *t = m->head, *next;
  for (; t; t = next) {
    tk_lean *l = &t->lean;
    long long d;
    next = t->next;
    if (!l->active || t->state != TK_RUNNING) continue;
    d = due_of(l);
    if (d < 0 || now < d) continue;
    if (l->deadline_ms >= 0 && now >= l->deadline_ms) {
      fail(m, t, CURLE_OPERATION_TIMEDOUT, "Operation timed out after %lld milliseconds with %lu bytes received",
           now - l->start_ms, (unsigned long)t->body.len);
    } else if (l->state == L_CONNECT && now >= l->start_ms + l->connect_ms) {
      fail(m, t, CURLE_OPERATION_TIMEDOUT, "Connection timed out after %lld milliseconds", now - l->start_ms);
    } else {
      fail(m, t, CURLE_OPERATION_TIMEDOUT, "Operation too slow. Less than %ld bytes/sec transferred the last %ld seconds",
           t->low_speed_limit, (long)t->low_speed_time);
    }
  }
}

long long tk_lean_next_due(tk_multi *m)
{
  long long best = -1;
  tk_transfer *t;
  for (t = m->head; t; t = t->next) {
    long long d;
    if (!t->lean.active) continue;
    d = due_of(&t->lean);
    if (d >= 0 && (best < 0 || d < best)) best = d;
  }
  return best;
}

void tk_lean_abort(tk_multi *m, tk_transfer *t)
{
  if (!t->lean.active) return;
  close_fd(m, &t->lean);
  if (t->state == TK_RUNNING) m->lean_running--;
  tk_buf_free(&t->lean.req);
}

void tk_lean_release(tk_transfer *t)
{
  if (t->lean.fd >= 0) close(t->lean.fd); /* not watched any more: its multi is gone */
  t->lean.fd = -1;
  tk_buf_free(&t->lean.req);
}
