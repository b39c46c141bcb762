/* pool.h: the idle easy handles a multi keeps for reuse (pool.c). */
#ifndef TK_POOL_H
#define TK_POOL_H

#include "transport.h"

/* An easy handle: an idle one of m's, or a new one (NULL when out of memory). */
CURL *tk_pool_get(tk_multi *m);
/* Gives e back to m (reset), or cleans it up when m is NULL, closed or its list is full.
 * e must not be in m's CURLM any more. */
void tk_pool_put(tk_multi *m, CURL *e);
/* Cleans up every idle handle of m (multi close). */
void tk_pool_free(tk_multi *m);

#endif
