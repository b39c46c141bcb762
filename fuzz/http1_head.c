/* Response heads as the plain-HTTP path reads them off a socket (src/lean.c): the head
 * parser on every prefix length the bytes may arrive in, with its invariants: a complete head
 * is never longer than the input or the limit, the Location it reports lies inside it, the
 * status is in range, and a prefix never parses as a complete head of another length. */
#include "fuzz_parse.h"
#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *p = tk_fuzz_copy(data, size);
  tk_h1_head h;
  const char *why;
  long full, r;
  size_t cut;
  if (!p) return 0;
  full = tk_h1_head_parse(p, size, 4096, 50, &h, &why);
  TK_FUZZ_CHECK(full == TK_H1_MORE || full == TK_H1_BAD || full == TK_H1_BIG || full > 0);
  if (full == TK_H1_BAD || full == TK_H1_BIG) TK_FUZZ_CHECK(why != NULL);
  if (full > 0) {
    TK_FUZZ_CHECK((size_t)full <= size && full <= 4096);
    TK_FUZZ_CHECK(h.status >= 100 && h.status <= 599 && (h.minor == 0 || h.minor == 1));
    TK_FUZZ_CHECK(h.clen >= -1 && h.nfields <= 50);
    if (h.location)
      TK_FUZZ_CHECK(h.location >= p && h.location + h.location_len <= p + full);
  }
  /* the same bytes arriving in two parts: a shorter prefix is incomplete or the same head */
  cut = size ? (size_t)data[0] % (size + 1) : 0;
  r = tk_h1_head_parse(p, cut, 4096, 50, &h, &why);
  if (r > 0 && full > 0) TK_FUZZ_CHECK(r == full);
  free(p);
  return 0;
}
