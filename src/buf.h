/* buf.h: the lowest layer of the transfer engine (buf.c): growable buffers, the raw header
 * block walker, and the error of our own a transfer records. */
#ifndef TK_BUF_H
#define TK_BUF_H

#include <stddef.h>

typedef struct tk_buf {
  char *data;
  size_t len, cap;
} tk_buf;

int tk_buf_append(tk_buf *b, const char *p, size_t n); /* 0, or -1 when out of memory */
void tk_buf_free(tk_buf *b);

/* Iterates the header lines of h (after the status line): calls fn for each field; a
 * non-zero return of fn stops the walk. */
typedef int (*tk_header_fn)(const char *name, size_t nlen, const char *val, size_t vlen,
                            void *ud);
void tk_header_each(const tk_buf *h, tk_header_fn fn, void *ud);
/* Last value of header `name` (case-insensitive) in the raw header block; NULL if none. */
const char *tk_header_find(const tk_buf *h, const char *name, size_t *vlen);

struct tk_transfer;
#define TK_ERR_MSG_MAX 512 /* bytes of an error text of our own */
/* t's error text buffer, allocated on first use (only failing transfers pay for it); NULL
 * when out of memory. Freed with the transfer. */
char *tk_err_buf(struct tk_transfer *t);
/* Records an error of our own on t (first one wins); the text is formatted into t's own
 * buffer. */
void tk_set_err(struct tk_transfer *t, const char *kind, int retryable, const char *fmt, ...);

#endif
