/* Content-Type header values -> "type/subtype" in lower case. */
#include "fuzz_parse.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char out[128];
  size_t cap, i, slashes = 0;
  char *v;
  int r;
  if (size < 1) return 0;
  cap = 1 + data[0] % sizeof out; /* exercise small output buffers too */
  v = tk_fuzz_copy(data + 1, size - 1);
  r = tk_parse_content_type(v, size - 1, out, cap);
  if (r >= 0) {
    TK_FUZZ_CHECK((size_t)r < cap && out[r] == '\0' && (size_t)r == strlen(out));
    for (i = 0; i < (size_t)r; i++) {
      TK_FUZZ_CHECK(!(out[i] >= 'A' && out[i] <= 'Z'));
      TK_FUZZ_CHECK((unsigned char)out[i] > 0x20 && out[i] != ';');
      if (out[i] == '/') slashes++;
    }
    TK_FUZZ_CHECK(slashes == 1 && out[0] != '/' && out[r - 1] != '/');
  }
  free(v);
  return 0;
}
