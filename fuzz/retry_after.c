/* Retry-After header values: delta-seconds or an HTTP-date. */
#include "fuzz_parse.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *v = tk_fuzz_copy(data, size);
  long r = tk_parse_retry_after(v, size, (time_t)1700000000);
  TK_FUZZ_CHECK(r == -1 || (r >= 0 && r <= TK_RETRY_AFTER_MAX));
  free(v);
  return 0;
}
