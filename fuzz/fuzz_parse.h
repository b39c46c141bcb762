/* fuzz_parse.h: shared bits of the libFuzzer harnesses (see fuzz/run.sh). */
#ifndef TK_FUZZ_PARSE_H
#define TK_FUZZ_PARSE_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Copies the input into an exact-size heap buffer so that ASan sees any read past len
 * (the parsers take a pointer and a length and must never need a terminator). */
static char *tk_fuzz_copy(const uint8_t *data, size_t size)
{
  char *p = (char *)malloc(size ? size : 1);
  if (p && size) memcpy(p, data, size);
  return p;
}

#define TK_FUZZ_CHECK(cond) do { if (!(cond)) { __builtin_trap(); } } while (0)
#endif
