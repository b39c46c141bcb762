/* lean.h: the plain-HTTP path of API calls (lean.c): our own HTTP/1.1 keep-alive client for
 * http:// URLs with a numeric host, inside the multi handle, next to libcurl. */
#ifndef TK_LEAN_H
#define TK_LEAN_H

#include "request.h"
#include "transport.h"

/* At multi creation: whether the path may be used (no proxy in the environment, no
 * per-host connection limit) and its idle list size. */
void tk_lean_init(tk_multi *m, long max_host_connections, long max_connects);
/* At multi close: the idle connections closed, the buffers freed. */
void tk_lean_free(tk_multi *m);
/* Sets t up on the plain-HTTP path when r allows it (an API call to http:// with a numeric
 * host, no download, no file or multipart body, no proxy): returns 1, with t not started;
 * 0 when the request is libcurl's; -1 when out of memory. */
int tk_lean_setup(lua_State *L, int ridx, tk_multi *m, tk_transfer *t, const tk_req *r);
/* Starts t (set up, linked as running): connects or takes an idle connection and sends
 * what the socket takes. t may be finished when this returns. */
void tk_lean_start(tk_multi *m, tk_transfer *t);
/* t's socket is ready for ev (CURL_CSELECT_* bits). */
void tk_lean_io(tk_multi *m, tk_transfer *t, int ev);
/* Fails the transfers whose deadline, connect deadline or stall limit has passed. */
void tk_lean_timers(tk_multi *m);
/* The earliest of those deadlines (monotonic ms), -1 when none. */
long long tk_lean_next_due(tk_multi *m);
/* Stops running transfer t: its socket closed (never reused), out of the watch list. */
void tk_lean_abort(tk_multi *m, tk_transfer *t);
/* Releases what t's plain-HTTP state owns (idempotent). */
void tk_lean_release(tk_transfer *t);

#endif
