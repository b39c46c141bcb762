/* clock.h: the monotonic clock and the plain sleep of taskapi.core. */
#ifndef TK_CLOCK_H
#define TK_CLOCK_H

#include "compat.h"

/* Milliseconds on the monotonic clock (C callers: libcurl's timer in sockets.c). */
long long tk_monotonic_ms(void);
/* core.now() -> seconds (float) on a monotonic clock, for deadlines and timers. */
int tk_now(lua_State *L);
/* core.sleep(seconds): blocks the thread; for plain scripts outside any event loop. */
int tk_sleep(lua_State *L);

#endif
