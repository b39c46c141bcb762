/* Chunked bodies as the plain-HTTP path decodes them (src/lean.c): the decoder fed the input
 * whole and then in pieces of every size the first byte picks; both ways must agree on the
 * outcome and on the decoded bytes, never report more bytes used than given, and never decode
 * more bytes than the input holds. */
#include "fuzz_parse.h"
#include "http1.h"

struct out {
  char buf[65536];
  size_t len;
};

static int sink(const char *p, size_t n, void *ud)
{
  struct out *o = (struct out *)ud;
  if (o->len + n > sizeof o->buf) return 1;
  memcpy(o->buf + o->len, p, n);
  o->len += n;
  return 0;
}

static int feed_all(const char *p, size_t size, size_t step, struct out *o, size_t *consumed)
{
  tk_h1_chunked c;
  size_t off = 0;
  memset(&c, 0, sizeof c);
  o->len = 0;
  while (off < size) {
    size_t n = size - off < step ? size - off : step, used = 0;
    int r = tk_h1_chunked_feed(&c, p + off, n, &used, sink, o);
    TK_FUZZ_CHECK(used <= n);
    if (r != TK_H1_MORE) {
      *consumed = off + used;
      return r;
    }
    TK_FUZZ_CHECK(used == n);
    off += n;
  }
  *consumed = off;
  return TK_H1_MORE;
}

static struct out a, b;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *p;
  size_t ua = 0, ub = 0, step;
  int ra, rb;
  if (size < 1) return 0;
  step = (size_t)data[0] % 7 + 1;
  p = tk_fuzz_copy(data + 1, size - 1);
  if (!p) return 0;
  ra = feed_all(p, size - 1, size, &a, &ua);
  rb = feed_all(p, size - 1, step, &b, &ub);
  TK_FUZZ_CHECK(a.len <= size - 1 && b.len <= size - 1);
  if (ra != TK_H1_SINK && rb != TK_H1_SINK) {
    TK_FUZZ_CHECK(ra == rb);
    if (ra == 1) TK_FUZZ_CHECK(ua == ub && a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0);
  }
  free(p);
  return 0;
}
