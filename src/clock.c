/* clock.c: owns time for the Lua layer: a monotonic clock (CLOCK_MONOTONIC, never jumps with
 * the wall clock) and a blocking sleep that survives signals (EINTR). */
#include <errno.h>
#include <time.h>

#include "clock.h"

long long tk_monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tk_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

int tk_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec req, rem;
  if (!(s > 0)) return 0;              /* also NaN */
  if (s > 86400.0 * 365) s = 86400.0 * 365;
  req.tv_sec = (time_t)s;
  req.tv_nsec = (long)((s - (lua_Number)req.tv_sec) * 1e9);
  if (req.tv_nsec >= 1000000000L) req.tv_nsec = 999999999L;
  while (nanosleep(&req, &rem) != 0 && errno == EINTR) req = rem;
  return 0;
}
