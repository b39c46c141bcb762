/* json.h: the JSON decoder of taskapi.core (json.c: strict RFC 8259, exact integers). */
#ifndef TK_JSON_H
#define TK_JSON_H

#include <stddef.h>

#include "compat.h"

#define TK_JSON_MAX_BYTES (8u * 1024u * 1024u)
#define TK_JSON_MAX_DEPTH 1000

/* At module open: pushes the null sentinel (core.null: the light userdata NULL). */
void tk_json_open(lua_State *L);
/* Decodes s; pushes the value and returns 1, or pushes nil, err (kind "bad_response")
 * and returns 2 (a body over max_bytes is such an error too). */
int tk_json_decode_buf(lua_State *L, const char *s, size_t len, size_t max_bytes);
/* core.json_decode(s [, max_bytes]) */
int tk_json_decode(lua_State *L);

#endif
