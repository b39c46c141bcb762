/* parse.c: pure C parsers of header values. No Lua
 * here: these functions get libFuzzer harnesses. Bounded by the given length throughout.
 * Only libcurl's curl_getdate is used (for HTTP-dates). */
#include <string.h>

#include <curl/curl.h>

#include "parse.h"

static int is_ows(char c) { return c == ' ' || c == '\t'; }

static int is_tchar(unsigned char c)
{
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
    return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

void tk_parse_trim(const char **v, size_t *len)
{
  while (*len > 0 && is_ows(**v)) { (*v)++; (*len)--; }
  while (*len > 0 && (is_ows((*v)[*len - 1]) || (*v)[*len - 1] == '\r' || (*v)[*len - 1] == '\n'))
    (*len)--;
}

long tk_parse_retry_after(const char *v, size_t len, time_t now)
{
  size_t i;
  if (!v) return -1;
  tk_parse_trim(&v, &len);
  if (len == 0) return -1;
  if (v[0] >= '0' && v[0] <= '9') {
    long n = 0;
    for (i = 0; i < len; i++) {
      if (v[i] < '0' || v[i] > '9') return -1;
      if (n <= TK_RETRY_AFTER_MAX) n = n * 10 + (v[i] - '0');
    }
    return n > TK_RETRY_AFTER_MAX ? TK_RETRY_AFTER_MAX : n;
  } else {
    char buf[64];
    time_t t;
    double d;
    if (len >= sizeof buf) return -1;
    for (i = 0; i < len; i++)
      if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e) return -1;
    memcpy(buf, v, len);
    buf[len] = '\0';
    /* an HTTP-date names a weekday or a month; curl_getdate is lenient, so require a
       letter first (delta-seconds were handled above, a '-' is garbage) */
    if (!((buf[0] >= 'A' && buf[0] <= 'Z') || (buf[0] >= 'a' && buf[0] <= 'z'))) return -1;
    t = curl_getdate(buf, NULL);
    if (t == (time_t)-1) return -1;
    d = difftime(t, now);
    if (d <= 0) return 0;
    if (d > (double)TK_RETRY_AFTER_MAX) return TK_RETRY_AFTER_MAX;
    return (long)d;
  }
}

int tk_parse_content_type(const char *v, size_t len, char *out, size_t cap)
{
  size_t i = 0, o = 0;
  int slash = 0;
  if (!v || !out || cap == 0) return -1;
  tk_parse_trim(&v, &len);
  while (i < len && is_tchar((unsigned char)v[i])) {
    if (o + 1 >= cap) return -1;
    out[o++] = lower(v[i++]);
  }
  if (o == 0 || i >= len || v[i] != '/') return -1;
  if (o + 1 >= cap) return -1;
  out[o++] = '/';
  i++;
  while (i < len && is_tchar((unsigned char)v[i])) {
    if (o + 1 >= cap) return -1;
    out[o++] = lower(v[i++]);
    slash = 1;
  }
  if (!slash) return -1;
  while (i < len && is_ows(v[i])) i++;
  if (i < len && v[i] != ';') return -1;
  out[o] = '\0';
  return (int)o;
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int ieq(const char *a, size_t alen, const char *b)
{
  size_t i, blen = strlen(b);
  if (alen != blen) return 0;
  for (i = 0; i < alen; i++)
    if (lower(a[i]) != lower(b[i])) return 0;
  return 1;
}

#define TK_NAME_MAX 255

/* Reduces raw (len bytes, may contain anything) to a safe base name in out. */
static int sanitize_name(const char *raw, size_t len, char *out, size_t cap)
{
  size_t i, start = 0, o = 0;
  for (i = 0; i < len; i++)
    if (raw[i] == '/' || raw[i] == '\\') start = i + 1;
  for (i = start; i < len; i++) {
    unsigned char c = (unsigned char)raw[i];
    if (c < 0x20 || c == 0x7f) c = '_';
    if (c == '.' && (o == 0 || out[o - 1] == '.')) continue; /* leading dots, ".." runs */
    if (o + 1 >= cap || o >= TK_NAME_MAX) break;
    out[o++] = (char)c;
  }
  /* do not end inside a UTF-8 sequence cut by the length limit */
  if (o > 0 && ((unsigned char)out[o - 1] & 0x80)) {
    size_t k = o;
    while (k > 0 && ((unsigned char)out[k - 1] & 0xC0) == 0x80) k--;
    if (k > 0) {
      unsigned char lead = (unsigned char)out[k - 1];
      size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      if (o - (k - 1) < need) o = k - 1;
    }
  }
  while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '.')) o--;
  if (o == 0) return -1;
  out[o] = '\0';
  return (int)o;
}

int tk_parse_content_disposition(const char *v, size_t len, char *out, size_t cap)
{
  char plain[1024], ext[1024];
  size_t plen = 0, elen = 0, i = 0;
  int have_plain = 0, have_ext = 0;
  if (!v || !out || cap == 0) return -1;
  /* disposition type */
  while (i < len && is_ows(v[i])) i++;
  while (i < len && is_tchar((unsigned char)v[i])) i++;
  while (i < len) {
    size_t ns, nl;
    while (i < len && (is_ows(v[i]) || v[i] == ';')) i++;
    ns = i;
    while (i < len && is_tchar((unsigned char)v[i])) i++;
    nl = i - ns;
    while (i < len && is_ows(v[i])) i++;
    if (nl == 0 || i >= len || v[i] != '=') {
      /* skip garbage up to the next ';' */
      while (i < len && v[i] != ';') i++;
      continue;
    }
    i++;
    while (i < len && is_ows(v[i])) i++;
    if (ieq(v + ns, nl, "filename*")) {
      /* charset'language'pct-encoded */
      size_t cs = i, q1, q2;
      int latin1;
      while (i < len && v[i] != '\'' && v[i] != ';') i++;
      if (i >= len || v[i] != '\'') continue;
      latin1 = ieq(v + cs, i - cs, "iso-8859-1");
      if (!latin1 && !ieq(v + cs, i - cs, "utf-8") && !ieq(v + cs, i - cs, "us-ascii")) {
        while (i < len && v[i] != ';') i++;
        continue;
      }
      q1 = i++;
      while (i < len && v[i] != '\'' && v[i] != ';') i++;
      if (i >= len || v[i] != '\'') continue;
      q2 = i++;
      (void)q1; (void)q2;
      elen = 0;
      while (i < len && v[i] != ';' && !is_ows(v[i])) {
        int c = (unsigned char)v[i];
        if (c == '%' && i + 2 < len && hexval(v[i + 1]) >= 0 && hexval(v[i + 2]) >= 0) {
          c = hexval(v[i + 1]) * 16 + hexval(v[i + 2]);
          i += 3;
        } else {
          i++;
        }
        if (latin1 && c >= 0x80) {
          if (elen + 2 < sizeof ext) {
            ext[elen++] = (char)(0xC0 | (c >> 6));
            ext[elen++] = (char)(0x80 | (c & 0x3F));
          }
        } else if (elen + 1 < sizeof ext) {
          ext[elen++] = (char)c;
        }
      }
      have_ext = 1;
    } else if (ieq(v + ns, nl, "filename")) {
      plen = 0;
      if (i < len && v[i] == '"') {
        i++;
        while (i < len && v[i] != '"') {
          if (v[i] == '\\' && i + 1 < len) i++;
          if (plen + 1 < sizeof plain) plain[plen++] = v[i];
          i++;
        }
        if (i < len) i++; /* closing quote */
      } else {
        while (i < len && v[i] != ';' && !is_ows(v[i])) {
          if (plen + 1 < sizeof plain) plain[plen++] = v[i];
          i++;
        }
      }
      have_plain = 1;
    } else {
      if (i < len && v[i] == '"') {
        i++;
        while (i < len && v[i] != '"') {
          if (v[i] == '\\' && i + 1 < len) i++;
          i++;
        }
        if (i < len) i++;
      }
      while (i < len && v[i] != ';') i++;
    }
  }
  if (have_ext) {
    int r = sanitize_name(ext, elen, out, cap);
    if (r > 0) return r;
  }
  if (have_plain) return sanitize_name(plain, plen, out, cap);
  return -1;
}

int tk_parse_content_range(const char *v, size_t len, long long *first, long long *last,
                           long long *total)
{
  size_t i = 0;
  long long a = 0, b = 0, t = 0;
  int digits;
  if (!v) return -1;
  tk_parse_trim(&v, &len);
  if (len < 6 || !ieq(v, 5, "bytes") || !is_ows(v[5])) return -1;
  i = 5;
  while (i < len && is_ows(v[i])) i++;
#define TK_NUM(var)                                                     \
  digits = 0;                                                           \
  while (i < len && v[i] >= '0' && v[i] <= '9') {                       \
    if (var > 922337203685477579LL) return -1;                          \
    var = var * 10 + (v[i++] - '0');                                    \
    digits++;                                                           \
  }                                                                     \
  if (!digits) return -1;
  TK_NUM(a)
  if (i >= len || v[i] != '-') return -1;
  i++;
  TK_NUM(b)
  if (i >= len || v[i] != '/') return -1;
  i++;
  if (i < len && v[i] == '*') {
    t = -1;
    i++;
  } else {
    TK_NUM(t)
  }
#undef TK_NUM
  if (i != len || b < a || (t >= 0 && b >= t)) return -1;
  *first = a;
  *last = b;
  *total = t;
  return 0;
}
