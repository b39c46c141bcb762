/* Content-Range header values: "bytes first-last/total". */
#include "fuzz_parse.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  long long a = -7, b = -7, t = -7;
  char *v = tk_fuzz_copy(data, size);
  if (tk_parse_content_range(v, size, &a, &b, &t) == 0) {
    TK_FUZZ_CHECK(a >= 0 && b >= a);
    TK_FUZZ_CHECK(t == -1 || b < t);
  } else {
    TK_FUZZ_CHECK(a == -7 && b == -7 && t == -7); /* nothing written on failure */
  }
  free(v);
  return 0;
}
