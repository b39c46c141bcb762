/* http1.h: pure C parsers of HTTP/1.1 responses for the plain-HTTP path of API calls
 * (http1.c; lean.c drives them): the response head and the chunked body. No Lua, no
 * sockets: every function takes a pointer and a length, never reads past it, and gets a
 * libFuzzer harness (fuzz/http1_head.c, fuzz/http1_chunked.c). */
#ifndef TK_HTTP1_H
#define TK_HTTP1_H

#include <stddef.h>

/* What a response head says about the connection and the body. */
typedef struct tk_h1_head {
  int minor;              /* HTTP/1.<minor>: 0 or 1 */
  long status;            /* 100 to 599 */
  long long clen;         /* Content-Length, -1 when absent */
  int chunked;            /* Transfer-Encoding ends with "chunked" */
  int close;              /* Connection: close (or HTTP/1.0 without keep-alive) */
  const char *location;   /* the Location value inside the head (not terminated), or NULL */
  size_t location_len;
  size_t nfields;         /* header fields of the head */
} tk_h1_head;

enum { TK_H1_MORE = 0, TK_H1_BAD = -1, TK_H1_BIG = -2 };

/* Parses one response head at the start of p[0..n): the status line and the fields up to
 * the empty line. Returns the head's length in bytes (the empty line included) when it is
 * complete and well formed; TK_H1_MORE when more bytes are needed; TK_H1_BAD for a head that
 * is not HTTP/1.x, a malformed status line, a field without a name or a colon, or a
 * Content-Length that is not digits or differs between two fields; TK_H1_BIG when the head
 * is longer than max bytes or has more than max_fields fields. *why names the problem
 * (a literal) when TK_H1_BAD or TK_H1_BIG is returned. */
long tk_h1_head_parse(const char *p, size_t n, size_t max, size_t max_fields, tk_h1_head *h,
                      const char **why);

/* The chunked transfer coding, decoded incrementally. */
typedef struct tk_h1_chunked {
  int state;                  /* internal: where the decoder stands */
  unsigned long long left;    /* bytes of data left in the current chunk */
  size_t line;                /* bytes of the current size, extension or trailer line */
  size_t trailers;            /* trailer fields seen */
} tk_h1_chunked;

/* Called with each run of decoded body bytes; non-zero stops the decoding (TK_H1_SINK). */
typedef int (*tk_h1_sink)(const char *p, size_t n, void *ud);
enum { TK_H1_SINK = -3 };

/* Feeds p[0..n) to the decoder (zeroed before the first call). Returns 1 when the body has
 * ended (the last chunk and the trailers read; *used says how many bytes of p belonged to
 * the body: the rest is what follows it on the connection), TK_H1_MORE when every byte was
 * used and more are needed, TK_H1_BAD for a malformed coding (a size that is not hex or
 * longer than 15 digits, a chunk not followed by CRLF, a line longer than 4096 bytes, more
 * than 100 trailer fields), TK_H1_SINK when the sink refused. */
int tk_h1_chunked_feed(tk_h1_chunked *c, const char *p, size_t n, size_t *used, tk_h1_sink sink,
                       void *ud);

#endif
