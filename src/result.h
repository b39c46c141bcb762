/* result.h: what a finished transfer gives Lua (result.c). */
#ifndef TK_RESULT_H
#define TK_RESULT_H

#include "transport.h"

/* Pushes the result table of finished transfer t (userdata at tidx, or 0 for one of
 * m:request's own), or nil and its error, kept in the transfer for a later call when keep;
 * url_idx (or 0): the request's URL string. Returns the number of values pushed. */
int tk_push_result(lua_State *L, int tidx, tk_transfer *t, int keep, int url_idx);
/* Pushes the error table of failed transfer t, with err.sent (whether any byte of the
 * request went out). */
void tk_push_transfer_error(lua_State *L, tk_transfer *t);

#endif
