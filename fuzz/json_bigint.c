/* The JSON big-integer pre-scan and rewrite (count, then copy quoting each big literal). */
#include "fuzz_parse.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *s = tk_fuzz_copy(data, size);
  size_t n = tk_json_bigint_count(s, size);
  size_t cap = size + 2 * n;
  char *out = (char *)malloc(cap ? cap : 1);
  size_t w = tk_json_bigint_rewrite(s, size, out, cap);
  /* the rewrite adds exactly two quotes per counted literal and changes nothing else */
  TK_FUZZ_CHECK(w == cap);
  if (n == 0) TK_FUZZ_CHECK(size == 0 || memcmp(out, s, size) == 0);
  /* idempotent: once quoted, nothing is left to quote */
  TK_FUZZ_CHECK(tk_json_bigint_count(out, w) == 0);
  /* a too-small output buffer is never overrun */
  if (cap > 0) {
    char *small = (char *)malloc(cap / 2 + 1);
    size_t w2 = tk_json_bigint_rewrite(s, size, small, cap / 2);
    TK_FUZZ_CHECK(w2 <= cap / 2);
    free(small);
  }
  free(out);
  free(s);
  return 0;
}
