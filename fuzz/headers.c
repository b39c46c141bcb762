/* Raw response header blocks as libcurl hands them over: the header-line walker behind
 * tk_header_find (src/transport.c), then the value parsers on what it finds, as
 * push_result and the download code do. */
#include "fuzz_parse.h"
#include "parse.h"
#include "transport.h"

static const char *const names[] = {"content-type", "retry-after", "x-tripo-trace-id",
                                    "content-range", "content-disposition", "content-length"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  tk_buf h = {0};
  size_t i, vlen;
  char out[256];
  long long a, b, t;
  if (size && tk_buf_append(&h, (const char *)data, size) != 0) return 0;
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *v;
    vlen = (size_t)-1;
    v = tk_header_find(&h, names[i], &vlen);
    if (!v) continue;
    TK_FUZZ_CHECK(v >= h.data && vlen <= h.len && (size_t)(v - h.data) + vlen <= h.len);
    (void)tk_parse_content_type(v, vlen, out, sizeof out);
    (void)tk_parse_retry_after(v, vlen, (time_t)1700000000);
    (void)tk_parse_content_disposition(v, vlen, out, sizeof out);
    (void)tk_parse_content_range(v, vlen, &a, &b, &t);
  }
  tk_buf_free(&h);
  return 0;
}
