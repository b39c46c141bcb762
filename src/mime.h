/* mime.h: request bodies from files (mime.c): multipart/form-data parts and a raw body file. */
#ifndef TK_MIME_H
#define TK_MIME_H

#include "transport.h"

/* Reads req.mime of the req table at index idx into t->mime and sets it as the body;
 * returns NULL or an error text. */
const char *tk_mime_setup(lua_State *L, int idx, tk_transfer *t);
/* Reads req.body_file (with req.body_type, req.method) of the req table at index idx: opens
 * the file into t->bf and sets it as the PUT or POST body, its fstat size as Content-Length;
 * returns NULL or an error text. After tk_mime_setup and the headers (it checks both). */
const char *tk_body_file_setup(lua_State *L, int idx, tk_transfer *t);
/* The one release of t's request bodies from files, t->mime and t->bf's FILE (idempotent);
 * only after t->easy is gone. */
void tk_mime_free(tk_transfer *t);

#endif
