/* sqlite.h: the SQLite binding of taskapi.core (sqlite.c). */
#ifndef TK_SQLITE_H
#define TK_SQLITE_H

#include "compat.h"

/* Adds sqlite_open, sqlite_version and file_stat to the module table on top of the stack. */
void tk_sqlite_open(lua_State *L);

#endif
