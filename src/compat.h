/* compat.h: Lua 5.1 (plain PUC Lua 5.1 and LuaJIT 2.1) / Lua 5.4 compatibility shims used
 * by every file of taskapi.core. Plain Lua 5.1 lacks luaL_setfuncs (LuaJIT 2.1 has it);
 * both lack lua_rawlen, lua_absindex, integers and uservalues. */
#ifndef TK_COMPAT_H
#define TK_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
#define tk_rawlen(L, i) lua_objlen((L), (i))
#define tk_absindex(L, i) \
  (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
/* Userdata with one user value. In 5.1 the environment must be a table, so the single
 * user value of taskapi userdata is always a table. */
#define tk_newuserdata(L, sz) lua_newuserdata((L), (sz))
#define tk_getuservalue(L, i) lua_getfenv((L), (i))
#define tk_setuservalue(L, i) lua_setfenv((L), (i))
/* luaL_setfuncs (5.2+): sets each function of l into the table below the nup upvalues on
 * the stack top, each closure sharing those upvalues, then pops them. LuaJIT declares its
 * own; plain 5.1 does not, so every 5.1 build uses this one (the macro leaves LuaJIT's
 * parenthesised declaration alone). */
static inline void tk_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#define luaL_setfuncs(L, l, nup) tk_setfuncs((L), (l), (nup))
#else
#define tk_rawlen(L, i) lua_rawlen((L), (i))
#define tk_absindex(L, i) lua_absindex((L), (i))
#define tk_newuserdata(L, sz) lua_newuserdatauv((L), (sz), 1)
#define tk_getuservalue(L, i) ((void)lua_getiuservalue((L), (i), 1))
#define tk_setuservalue(L, i) ((void)lua_setiuservalue((L), (i), 1))
#endif

/* Pushes an integral value: a Lua integer on 5.3+, a (exact below 2^53) number on 5.1. */
#if LUA_VERSION_NUM >= 503
#define tk_pushint(L, v) lua_pushinteger((L), (lua_Integer)(v))
#else
#define tk_pushint(L, v) lua_pushnumber((L), (lua_Number)(v))
#endif

/* State the module keeps per Lua state (the private cjson decode, the error metatable)
 * lives in the registry under the address of a static of the file that owns it: one raw
 * lookup, no string hashing, no name another library could take. (Not upvalues: a JSON
 * body is decoded and an error built while completing a transfer, from any of a dozen C
 * functions and methods.) tk_registry_get pushes the value; tk_registry_set pops it. */
static inline void tk_registry_get(lua_State *L, const void *key)
{
  lua_pushlightuserdata(L, (void *)key);
  lua_rawget(L, LUA_REGISTRYINDEX);
}
static inline void tk_registry_set(lua_State *L, const void *key)
{
  lua_pushlightuserdata(L, (void *)key);
  lua_insert(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

/* Registers the metatable `name` of a userdata class: methods as __index, one idempotent close
 * as __gc and (5.4) __close, __tostring, and a locked __metatable. Every handle class of
 * taskapi.core (multi, transfer, ledger database) is made by it. */
static inline void tk_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                                lua_CFunction close, lua_CFunction tostr)
{
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__close");
#endif
  lua_pushcfunction(L, tostr);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "taskapi.core");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

#endif
