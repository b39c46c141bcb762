/* json.c: the JSON decoder of taskapi.core (RFC 8259, strict), one pass over the bytes
 * straight into Lua values: no second library, no copy of the text, no walk over the result.
 *  - integer literals beyond 2^53 (not exact as doubles) come out as strings of the same
 *    digits; the others as Lua integers on 5.3+ (numbers on 5.1/LuaJIT, exact below 2^53);
 *  - on Lua 5.3+, JSON has one number type, so every number with an integral value that fits
 *    a lua_Integer becomes a Lua integer (1.0 and 1e3 too); other numbers stay floats; a
 *    zero is +0 on every runtime (LuaJIT never sees -0);
 *  - null is core.null (the light userdata NULL, as cjson.null and ngx.null);
 *  - strings: the escapes of RFC 8259, \uXXXX as UTF-8 (a surrogate pair as one code point;
 *    a lone or reversed surrogate is malformed), a raw control character (< 0x20) is
 *    malformed, other bytes are kept as they are;
 *  - numbers: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? and nothing else (no "1.", ".5",
 *    "01", "+1", NaN, Infinity, hex); a magnitude past the double range gives +-inf;
 *  - input over max_bytes is refused before decoding; malformed JSON (trailing bytes too)
 *    and nesting deeper than 1000 give nil, err(kind="bad_response"), never a crash.
 * Every read checks the end of the input first (the text need not end in a NUL). */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "json.h"

typedef struct {
  lua_State *L;
  const unsigned char *p, *end, *start;
  char *scratch;  /* unescaped string bytes: a GC-owned userdata at stack slot `base` */
  int base;       /* the first stack slot of the decode (the scratch's, once it exists) */
  const char *err; /* what is malformed, set once */
} tk_json;

void tk_json_open(lua_State *L)
{
  lua_pushlightuserdata(L, NULL); /* core.null */
}

#define WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

static void skip_ws(tk_json *j)
{
  while (j->p < j->end && WS(*j->p)) j->p++;
}

static int fail(tk_json *j, const char *what)
{
  if (!j->err) j->err = what;
  return 0;
}

/* Pushes an integral value held as a double (on 5.3+ an integer when it fits). */
static void push_number(lua_State *L, double d)
{
  if (d == 0) d = 0; /* -0 -> +0 */
#if LUA_VERSION_NUM >= 503
  {
    lua_Integer i;
    if (lua_numbertointeger(d, &i) && (lua_Number)i == d) {
      lua_pushinteger(L, i);
      return;
    }
  }
#endif
  lua_pushnumber(L, (lua_Number)d);
}

static const double POW10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };

/* strtod of the token [s, s+n) (already checked), with the C locale's '.' whatever the
 * process's LC_NUMERIC. */
static double slow_double(const unsigned char *s, size_t n)
{
  char tmp[512], *heap = NULL, *buf = tmp, *e;
  char dot = '.';
  const char *lc = localeconv()->decimal_point;
  double d;
  size_t k;
  if (lc && lc[0] && !lc[1]) dot = lc[0];
  if (n + 1 > sizeof tmp) {
    heap = (char *)malloc(n + 1); /* freed below, before anything can raise */
    if (!heap) return HUGE_VAL * 0.0; /* NaN: the caller refuses it */
    buf = heap;
  }
  for (k = 0; k < n; k++) buf[k] = (s[k] == '.') ? dot : (char)s[k];
  buf[n] = 0;
  errno = 0;
  d = strtod(buf, &e);
  free(heap);
  return d;
}

/* One number: checks the RFC grammar, then pushes it. */
static int number(tk_json *j)
{
  const unsigned char *s = j->p, *q = s;
  unsigned long long m = 0; /* the first 19 significant digits */
  int nd = 0, neg = 0, integral = 1, frac_digits = 0;
  int slow = 0; /* counts that left their exact range (a long exponent, many leading zeros) */
  long ex = 0;
  if (q < j->end && *q == '-') { neg = 1; q++; }
  if (q >= j->end) return fail(j, "number without digits");
  if (*q == '0') {
    q++;
  } else if (*q >= '1' && *q <= '9') {
    while (q < j->end && *q >= '0' && *q <= '9') {
      if (nd < 19) m = m * 10 + (unsigned)(*q - '0');
      nd++;
      q++;
    }
  } else {
    return fail(j, "number without digits");
  }
  if (q < j->end && *q == '.') {
    integral = 0;
    q++;
    if (q >= j->end || *q < '0' || *q > '9') return fail(j, "no digit after the decimal point");
    while (q < j->end && *q >= '0' && *q <= '9') {
      if (m != 0 || *q != '0') { /* significant digits only */
        if (nd < 19) { m = m * 10 + (unsigned)(*q - '0'); frac_digits++; }
        nd++;
      } else if (frac_digits < 1000) {
        frac_digits++;
      } else {
        slow = 1;
      }
      q++;
    }
  }
  if (q < j->end && (*q == 'e' || *q == 'E')) {
    int eneg = 0;
    integral = 0;
    q++;
    if (q < j->end && (*q == '+' || *q == '-')) { eneg = *q == '-'; q++; }
    if (q >= j->end || *q < '0' || *q > '9') return fail(j, "no digit in the exponent");
    while (q < j->end && *q >= '0' && *q <= '9') {
      if (ex < 100000) ex = ex * 10 + (*q - '0');
      else slow = 1;
      q++;
    }
    if (eneg) ex = -ex;
  }
  j->p = q;
  if (integral) {
    /* an integer literal: exact below 2^53, else the literal's text (nd: its digit count) */
    if (nd > 16 || (nd == 16 && m > 9007199254740992ULL)) {
      lua_pushlstring(j->L, (const char *)s, (size_t)(q - s));
      return 1;
    }
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(j->L, neg ? -(lua_Integer)m : (lua_Integer)m);
#else
    lua_pushnumber(j->L, neg && m ? -(lua_Number)m : (lua_Number)m);
#endif
    return 1;
  }
  {
    double d;
    long e10 = ex - frac_digits;
    if (!slow && nd <= 15 && e10 >= -22 && e10 <= 22) {
      /* exact: a mantissa below 2^53 and one correctly rounded multiply or divide */
      d = (double)m;
      d = e10 < 0 ? d / POW10[-e10] : d * POW10[e10];
      if (neg) d = -d;
    } else {
      d = slow_double(s, (size_t)(q - s));
      if (d != d) return fail(j, "out of memory");
    }
    push_number(j->L, d);
  }
  return 1;
}

/* PLAIN[c]: byte c stands for itself inside a string (not '"', '\\' or a control character). */
static const unsigned char PLAIN[256] = {
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static int hex4(const unsigned char *p, unsigned *out)
{
  unsigned v = 0;
  int k;
  for (k = 0; k < 4; k++) {
    unsigned c = p[k], h;
    if (c >= '0' && c <= '9') h = c - '0';
    else if (c >= 'a' && c <= 'f') h = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') h = c - 'A' + 10;
    else return 0;
    v = v * 16 + h;
  }
  *out = v;
  return 1;
}

/* One string (j->p at its opening quote): pushes it. A string without escapes is pushed
 * from the input as it is; one with escapes is unescaped into the scratch buffer (never
 * longer than the escaped text, so one buffer of the input's size serves every string). */
static int string(tk_json *j)
{
  const unsigned char *q = ++j->p, *end = j->end;
  char *o;
  while (q < end && PLAIN[*q]) q++;
  if (q >= end) return fail(j, "unterminated string");
  if (*q == '"') {
    lua_pushlstring(j->L, (const char *)j->p, (size_t)(q - j->p));
    j->p = q + 1;
    return 1;
  }
  if (*q < 0x20) return fail(j, "control character in a string");
  if (!j->scratch) {
    /* made once, and moved below the values being built (their indexes are relative to
     * the top, so they do not move for the code building them); removed at the end */
    j->scratch = (char *)lua_newuserdata(j->L, (size_t)(end - j->start) + 1);
    lua_insert(j->L, j->base);
  }
  o = j->scratch;
  memcpy(o, j->p, (size_t)(q - j->p));
  o += q - j->p;
  while (q < end) {
    unsigned c = *q;
    if (c == '"') {
      lua_pushlstring(j->L, j->scratch, (size_t)(o - j->scratch));
      j->p = q + 1;
      return 1;
    }
    if (c < 0x20) return fail(j, "control character in a string");
    if (c != '\\') { *o++ = (char)c; q++; continue; }
    if (q + 1 >= end) break;
    c = q[1];
    q += 2;
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '/': *o++ = '/'; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (end - q < 4 || !hex4(q, &cp)) return fail(j, "bad \\u escape");
      q += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(j, "lone low surrogate in \\u escape");
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
          return fail(j, "lone high surrogate in \\u escape");
        q += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      /* UTF-8 of cp: never longer than its escape (6 bytes give at most 3, 12 give 4) */
      if (cp < 0x80) {
        *o++ = (char)cp;
      } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
      } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
      }
      break;
    }
    default:
      return fail(j, "bad escape in a string");
    }
  }
  return fail(j, "unterminated string");
}

static int literal(tk_json *j, const char *word, size_t n)
{
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return fail(j, "unexpected character");
  j->p += n;
  return 1;
}

static int value(tk_json *j, int depth);

/* Values (key-value pairs) of a container held on the stack before its table is made, so
 * that a table of up to this many is made at its final size (no rehash as it fills); the
 * rest of a bigger one is stored as it comes. */
#define TK_JSON_BATCH 16

/* Makes the table of the n values (pairs) on top of the stack, at their size, moves them
 * into it and leaves it in their place. */
static void make_table(lua_State *L, int object, int n)
{
  int first = lua_gettop(L) - (object ? 2 * n : n) + 1, t, i;
  lua_createtable(L, object ? 0 : n, object ? n : 0);
  t = lua_gettop(L);
  for (i = 0; i < n; i++) {
    if (object) {
      lua_pushvalue(L, first + 2 * i);
      lua_pushvalue(L, first + 2 * i + 1);
      lua_rawset(L, t);
    } else {
      lua_pushvalue(L, first + i);
      lua_rawseti(L, t, i + 1);
    }
  }
  lua_replace(L, first);
  lua_settop(L, first);
}

/* An array or object (j->p at its bracket); depth counts the containers open around it. */
static int container(tk_json *j, int depth)
{
  lua_State *L = j->L;
  int object = *j->p == '{';
  unsigned char close = object ? '}' : ']';
  int n = 0, made = 0;
  if (depth > TK_JSON_MAX_DEPTH) return fail(j, "nested too deep (more than 1000 levels)");
  if (!lua_checkstack(L, 2 * TK_JSON_BATCH + 4)) return fail(j, "nested too deep for the Lua stack");
  j->p++;
  skip_ws(j);
  if (j->p < j->end && *j->p == close) {
    j->p++;
    lua_createtable(L, 0, 0);
    return 1;
  }
  for (;;) {
    if (object) {
      if (j->p >= j->end || *j->p != '"') return fail(j, "object key is not a string");
      if (!string(j)) return 0;
      skip_ws(j);
      if (j->p >= j->end || *j->p != ':') return fail(j, "no ':' after an object key");
      j->p++;
      skip_ws(j);
    }
    if (!value(j, depth)) return 0;
    n++;
    if (made) {
      if (object) lua_rawset(L, -3);
      else lua_rawseti(L, -2, n);
    } else if (n == TK_JSON_BATCH) {
      make_table(L, object, n);
      made = 1;
    }
    skip_ws(j);
    if (j->p >= j->end) return fail(j, object ? "unterminated object" : "unterminated array");
    if (*j->p == ',') {
      j->p++;
      skip_ws(j);
      continue;
    }
    if (*j->p == close) {
      j->p++;
      if (!made) make_table(L, object, n);
      return 1;
    }
    return fail(j, object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

/* One value at j->p (whitespace before it already skipped): pushes it, or returns 0. */
static int value(tk_json *j, int depth)
{
  if (j->p >= j->end) return fail(j, "unexpected end of input");
  switch (*j->p) {
  case '{': case '[': return container(j, depth + 1);
  case '"': return string(j);
  case 't': if (!literal(j, "true", 4)) return 0; lua_pushboolean(j->L, 1); return 1;
  case 'f': if (!literal(j, "false", 5)) return 0; lua_pushboolean(j->L, 0); return 1;
  case 'n': if (!literal(j, "null", 4)) return 0; lua_pushlightuserdata(j->L, NULL); return 1;
  default:
    if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) return number(j);
    return fail(j, "unexpected character");
  }
}

int tk_json_decode_buf(lua_State *L, const char *s, size_t len, size_t max_bytes)
{
  tk_json j;
  int top = lua_gettop(L), ok;
  if (max_bytes && len > max_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg, "JSON body larger than %lu bytes", (unsigned long)max_bytes);
    return tk_fail(L, "bad_response", msg, -1, -1, 0);
  }
  j.L = L;
  j.start = j.p = (const unsigned char *)s;
  j.end = j.p + len;
  j.scratch = NULL;
  j.base = top + 1;
  j.err = NULL;
  skip_ws(&j);
  ok = value(&j, 0);
  if (ok) {
    skip_ws(&j);
    if (j.p != j.end) ok = fail(&j, "bytes after the value");
  }
  if (!ok) {
    char msg[160];
    lua_settop(L, top);
    snprintf(msg, sizeof msg, "malformed JSON: %s at byte %lu", j.err ? j.err : "decode error",
             (unsigned long)(j.p - j.start));
    return tk_fail(L, "bad_response", msg, -1, -1, 0);
  }
  if (j.scratch) lua_remove(L, j.base);
  return 1;
}

int tk_json_decode(lua_State *L)
{
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Number max = luaL_optnumber(L, 2, (lua_Number)TK_JSON_MAX_BYTES);
  if (max < 0) max = 0;
  return tk_json_decode_buf(L, s, len, (size_t)max);
}
