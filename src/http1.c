/* http1.c: pure C parsers of HTTP/1.1 responses (http1.h): the head (status line, the fields
 * the plain-HTTP path needs: Content-Length, Transfer-Encoding, Connection, Location) and the
 * chunked body decoder. No Lua, no sockets, no allocation: bounded by the given length. */
#include <string.h>
#include <strings.h>

#include "http1.h"
#include "parse.h"

#define TK_H1_LINE_MAX 4096
#define TK_H1_TRAILERS_MAX 100

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_ows(char c) { return c == ' ' || c == '\t'; }

static int hexval(char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* does the comma-separated list v contain token tok (any case)? */
static int has_token(const char *v, size_t len, const char *tok)
{
  size_t tl = strlen(tok), i = 0;
  while (i < len) {
    size_t j = i, a, b;
    while (j < len && v[j] != ',') j++;
    a = i;
    b = j;
    while (a < b && is_ows(v[a])) a++;
    while (b > a && is_ows(v[b - 1])) b--;
    if (b - a == tl && strncasecmp(v + a, tok, tl) == 0) return 1;
    i = j + 1;
  }
  return 0;
}

/* does the comma-separated list v end with token tok (any case)? */
static int last_token(const char *v, size_t len, const char *tok)
{
  size_t tl = strlen(tok), b = len, a;
  while (b > 0 && is_ows(v[b - 1])) b--;
  a = b;
  while (a > 0 && v[a - 1] != ',') a--;
  while (a < b && is_ows(v[a])) a++;
  return b - a == tl && strncasecmp(v + a, tok, tl) == 0;
}

long tk_h1_head_parse(const char *p, size_t n, size_t max, size_t max_fields, tk_h1_head *h,
                      const char **why)
{
  size_t i, lim = n < max ? n : max, end = 0;
  int keep_alive = 0, conn_close = 0;
  memset(h, 0, sizeof *h);
  h->clen = -1;
  *why = NULL;
  /* "HTTP/1.x NNN" first: a server that speaks something else is told at once */
  {
    static const char pre[] = "HTTP/1.";
    size_t k = n < 12 ? n : 12;
    for (i = 0; i < k; i++) {
      int ok;
      char c = p[i];
      if (i < 7) ok = c == pre[i];
      else if (i == 7) ok = c == '0' || c == '1';
      else if (i == 8) ok = c == ' ';
      else if (i == 9) ok = c >= '1' && c <= '5';
      else ok = is_digit(c);
      if (!ok) {
        *why = "not an HTTP/1.x status line";
        return TK_H1_BAD;
      }
    }
    if (n < 12) return n >= max ? TK_H1_BIG : TK_H1_MORE;
  }
  /* the end of the head: the first empty line */
  for (i = 1; i + 1 < lim; i++) {
    const char *nl = (const char *)memchr(p + i, '\n', lim - 1 - i); /* line ends, found fast */
    if (!nl) break;
    i = (size_t)(nl - p);
    if (p[i + 1] == '\n') { /* bare LF line ends */
      end = i + 2;
      break;
    }
    if (i + 2 < lim && p[i + 1] == '\r' && p[i + 2] == '\n') {
      end = i + 3;
      break;
    }
  }
  if (!end) {
    if (n >= max) {
      *why = "response headers too large";
      return TK_H1_BIG;
    }
    return TK_H1_MORE;
  }
  h->minor = p[7] - '0';
  h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  if (12 < end && p[12] != ' ' && p[12] != '\r' && p[12] != '\n') {
    *why = "not an HTTP/1.x status line";
    return TK_H1_BAD;
  }
  /* the fields, line by line after the status line */
  {
    const char *e = (const char *)memchr(p, '\n', end);
    i = e ? (size_t)(e - p) + 1 : end;
  }
  while (i < end) {
    size_t ls = i, le, colon, nl;
    const char *v, *e;
    size_t vlen;
    e = (const char *)memchr(p + i, '\n', end - i);
    i = e ? (size_t)(e - p) : end;
    le = i; /* at the '\n' */
    i++;
    nl = le;
    if (nl > ls && p[nl - 1] == '\r') nl--;
    if (nl == ls) break; /* the empty line */
    if (is_ows(p[ls])) { /* obsolete line folding: refused */
      *why = "folded header line";
      return TK_H1_BAD;
    }
    for (colon = ls; colon < nl && p[colon] != ':'; colon++)
      if (p[colon] == ' ' || p[colon] == '\t' || p[colon] == '\r' || p[colon] == '\0') break;
    if (colon == ls || colon >= nl || p[colon] != ':') {
      *why = "malformed header line";
      return TK_H1_BAD;
    }
    if (++h->nfields > max_fields) {
      *why = "too many header fields";
      return TK_H1_BIG;
    }
    v = p + colon + 1;
    vlen = nl - colon - 1;
    tk_parse_trim(&v, &vlen);
    switch (colon - ls) {
    case 14:
      if (strncasecmp(p + ls, "content-length", 14) == 0) {
        long long x = 0;
        size_t k;
        if (vlen == 0 || vlen > 15) {
          *why = "malformed Content-Length";
          return TK_H1_BAD;
        }
        for (k = 0; k < vlen; k++) {
          if (!is_digit(v[k])) {
            *why = "malformed Content-Length";
            return TK_H1_BAD;
          }
          x = x * 10 + (v[k] - '0');
        }
        if (h->clen >= 0 && h->clen != x) {
          *why = "two different Content-Length values";
          return TK_H1_BAD;
        }
        h->clen = x;
      }
      break;
    case 17:
      if (strncasecmp(p + ls, "transfer-encoding", 17) == 0)
        h->chunked = last_token(v, vlen, "chunked");
      break;
    case 10:
      if (strncasecmp(p + ls, "connection", 10) == 0) {
        if (has_token(v, vlen, "close")) conn_close = 1;
        if (has_token(v, vlen, "keep-alive")) keep_alive = 1;
      }
      break;
    case 8:
      if (strncasecmp(p + ls, "location", 8) == 0) {
        h->location = v;
        h->location_len = vlen;
      }
      break;
    default:
      break;
    }
  }
  h->close = conn_close || (h->minor == 0 && !keep_alive);
  return (long)end;
}

/* decoder states */
enum { C_SIZE = 0, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER, C_TRAILER_LF, C_DONE };

int tk_h1_chunked_feed(tk_h1_chunked *c, const char *p, size_t n, size_t *used, tk_h1_sink sink,
                       void *ud)
{
  size_t i = 0;
  *used = 0;
  while (i < n) {
    char ch = p[i];
    switch (c->state) {
    case C_SIZE: {
      int v = hexval(ch);
      if (v >= 0) {
        if (++c->line > 15) return TK_H1_BAD;
        c->left = c->left * 16 + (unsigned)v;
        i++;
      } else if (c->line == 0) {
        return TK_H1_BAD;
      } else if (ch == ';' || ch == ' ' || ch == '\t') {
        c->state = C_EXT;
        i++;
      } else if (ch == '\r') {
        c->state = C_SIZE_LF;
        i++;
      } else if (ch == '\n') {
        i++;
        goto size_done;
      } else {
        return TK_H1_BAD;
      }
      break;
    }
    case C_EXT:
      if (ch == '\r') c->state = C_SIZE_LF;
      else if (ch == '\n') {
        i++;
        goto size_done;
      } else if (++c->line > TK_H1_LINE_MAX) return TK_H1_BAD;
      i++;
      break;
    case C_SIZE_LF:
      if (ch != '\n') return TK_H1_BAD;
      i++;
    size_done:
      c->line = 0;
      c->state = c->left == 0 ? C_TRAILER : C_DATA;
      break;
    case C_DATA: {
      size_t k = n - i;
      if ((unsigned long long)k > c->left) k = (size_t)c->left;
      if (sink(p + i, k, ud) != 0) {
        *used = i;
        return TK_H1_SINK;
      }
      i += k;
      c->left -= k;
      if (c->left == 0) c->state = C_DATA_CR;
      break;
    }
    case C_DATA_CR:
      if (ch == '\r') c->state = C_DATA_LF;
      else if (ch == '\n') c->state = C_SIZE;
      else return TK_H1_BAD;
      i++;
      break;
    case C_DATA_LF:
      if (ch != '\n') return TK_H1_BAD;
      c->state = C_SIZE;
      i++;
      break;
    case C_TRAILER: /* a trailer line, or the empty line that ends the body */
      if (ch == '\r') {
        c->state = C_TRAILER_LF;
      } else if (ch == '\n') {
        if (c->line == 0) {
          c->state = C_DONE;
          *used = i + 1;
          return 1;
        }
        c->line = 0;
        if (++c->trailers > TK_H1_TRAILERS_MAX) return TK_H1_BAD;
      } else if (++c->line > TK_H1_LINE_MAX) {
        return TK_H1_BAD;
      }
      i++;
      break;
    case C_TRAILER_LF:
      if (ch != '\n') return TK_H1_BAD;
      i++;
      if (c->line == 0) {
        c->state = C_DONE;
        *used = i;
        return 1;
      }
      c->line = 0;
      c->state = C_TRAILER;
      if (++c->trailers > TK_H1_TRAILERS_MAX) return TK_H1_BAD;
      break;
    default: /* C_DONE: nothing more belongs to the body */
      *used = i;
      return 1;
    }
  }
  *used = n;
  return c->state == C_DONE ? 1 : TK_H1_MORE;
}
