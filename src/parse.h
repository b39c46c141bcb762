/* parse.h: pure C parsers of untrusted response data (no Lua): Retry-After, Content-Type,
 * Content-Disposition filename, Content-Range. Every
 * function takes a pointer and a length, never reads past it, and needs no terminator. */
#ifndef TK_PARSE_H
#define TK_PARSE_H

#include <stddef.h>
#include <time.h>

#define TK_RETRY_AFTER_MAX 86400L

/* Narrows v[0..*len) to its value without blanks (space, tab) around it, nor line ends
 * after it. */
void tk_parse_trim(const char **v, size_t *len);

/* Retry-After: delta-seconds or an HTTP-date (relative to now). Returns seconds in
 * [0, TK_RETRY_AFTER_MAX] (a past date gives 0), or -1 when absent or malformed. */
long tk_parse_retry_after(const char *v, size_t len, time_t now);

/* Content-Type: writes "type/subtype" in lower case without parameters into out
 * (NUL-terminated) and returns its length, or -1 when malformed or longer than cap-1. */
int tk_parse_content_type(const char *v, size_t len, char *out, size_t cap);

/* Content-Disposition: the filename (filename*=UTF-8''... preferred over filename=),
 * reduced to a safe base name: no directory part, no '/', '\\', "..", control characters
 * or leading dots, at most 255 bytes. Returns its length (out NUL-terminated) or -1. */
int tk_parse_content_disposition(const char *v, size_t len, char *out, size_t cap);

/* Content-Range: "bytes first-last/total" (total may be "*", given as -1). Returns 0 on
 * success, -1 when malformed. */
int tk_parse_content_range(const char *v, size_t len, long long *first, long long *last,
                           long long *total);

#endif
