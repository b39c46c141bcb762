/* request.h: building a transfer from a req table (request.c). */
#ifndef TK_REQUEST_H
#define TK_REQUEST_H

#include "transport.h"

/* Configures t->easy from the req table at ridx; the transfer userdata is at tidx.
 * Returns NULL or an invalid_argument message (a literal, or t's own error buffer). */
const char *tk_request_setup(lua_State *L, int ridx, int tidx, tk_transfer *t);

#endif
