/* buf.c: the lowest layer of the transfer engine: growable buffers, the walk over a raw
 * header block (and the lookup of one field), and the error of our own a transfer records
 * (its text buffer is the transfer's, allocated on first use, freed with it).
 * Ownership: a tk_buf owns its data (tk_buf_free releases it). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
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

void tk_header_each(const tk_buf *h, tk_header_fn fn, void *ud)
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
  tk_header_each(h, find_fn, &f);
  if (f.val && vlen) *vlen = f.vlen;
  return f.val;
}

