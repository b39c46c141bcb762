/* redis.h: the Redis binding of taskapi.core (redis.c, Debian's libhiredis). */
#ifndef TK_REDIS_H
#define TK_REDIS_H

#include "compat.h"

/* Adds redis_connect and redis_null to the module table on top of the stack. */
void tk_redis_open(lua_State *L);

#endif
