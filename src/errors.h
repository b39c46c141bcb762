/* errors.h: error tables {kind=, message=, status=, code=, retryable=, curl_code=}. */
#ifndef TK_ERRORS_H
#define TK_ERRORS_H

#include "compat.h"

/* Pushes a new error table. status/curl_code < 0 and retryable < 0 mean "not set". */
void tk_push_error(lua_State *L, const char *kind, const char *message, long status,
                   long curl_code, int retryable);
/* Pushes nil and an error table; returns 2 (for `return tk_fail(...)`). */
int tk_fail(lua_State *L, const char *kind, const char *message, long status,
            long curl_code, int retryable);
/* Pushes nil and a printf-formatted invalid_argument error; returns 2. */
int tk_fail_arg(lua_State *L, const char *fmt, ...);
/* core.set_error_metatable(mt): mt a table or nil. */
int tk_set_error_metatable(lua_State *L);

#endif
