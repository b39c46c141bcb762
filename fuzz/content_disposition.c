/* Content-Disposition header values -> a safe base name (never a path). */
#include "fuzz_parse.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char out[512];
  size_t cap, i;
  char *v;
  int r;
  if (size < 1) return 0;
  cap = 1 + (size_t)data[0] * 2; /* 1..511 */
  v = tk_fuzz_copy(data + 1, size - 1);
  r = tk_parse_content_disposition(v, size - 1, out, cap);
  if (r >= 0) {
    TK_FUZZ_CHECK(r > 0 && (size_t)r < cap && r <= 255 && out[r] == '\0');
    TK_FUZZ_CHECK(out[0] != '.');
    TK_FUZZ_CHECK(strstr(out, "..") == NULL);
    for (i = 0; i < (size_t)r; i++) {
      unsigned char c = (unsigned char)out[i];
      TK_FUZZ_CHECK(c != '/' && c != '\\' && c >= 0x20 && c != 0x7f);
    }
  }
  free(v);
  return 0;
}
