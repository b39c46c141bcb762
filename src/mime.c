/* mime.c: multipart/form-data bodies for taskapi.core (req.mime), built with libcurl's mime
 * API. A part is either a file, {name=, path=, type=?, filename=?}, which libcurl streams from
 * disk while sending (curl_mime_filedata: the file is never read into Lua or into memory), or
 * a plain field, {name=, data=} (copied by libcurl).
 * Ownership: the curl_mime handle belongs to its transfer (t->mime) from the moment it is
 * made; tk_mime_free is its one, idempotent release, called once the easy handle that uses
 * it is gone (transfer finished, aborted or released). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "transport.h"

/* Formats an error text into the transfer's own message buffer (no globals) and returns it;
 * t->err_kind stays unset: the caller turns it into invalid_argument. */
static const char *part_err(tk_transfer *t, int i, const char *fmt, const char *detail)
{
  char what[200];
  char *b = tk_err_buf(t);
  if (!b) return "req.mime: out of memory";
  snprintf(what, sizeof what, fmt, detail ? detail : "");
  snprintf(b, TK_ERR_MSG_MAX, "req.mime[%d]: %s", i, what);
  return b;
}

static int bad_text(const char *s, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0' || s[i] == '"') return 1;
  return 0;
}

/* Reads the optional string field k of the table at index idx; NULL when absent. Leaves the
 * value on the stack (the caller pops). *bad is set when present but not a string. */
static const char *opt_text(lua_State *L, int idx, const char *k, size_t *len, int *bad)
{
  lua_getfield(L, idx, k);
  if (lua_isnil(L, -1)) return NULL;
  if (lua_type(L, -1) != LUA_TSTRING) {
    *bad = 1;
    return NULL;
  }
  return lua_tolstring(L, -1, len);
}

/* One part from the table at the top of the stack (index base). Returns NULL or an error text. */
static const char *add_part(lua_State *L, tk_transfer *t, int i)
{
  curl_mimepart *part;
  const char *name, *path, *type, *filename, *data;
  size_t nlen = 0, plen = 0, tlen = 0, flen = 0, dlen = 0;
  int bad = 0, base = lua_gettop(L);
  const char *err = NULL;

  name = opt_text(L, base, "name", &nlen, &bad);
  path = opt_text(L, base, "path", &plen, &bad);
  data = opt_text(L, base, "data", &dlen, &bad);
  type = opt_text(L, base, "type", &tlen, &bad);
  filename = opt_text(L, base, "filename", &flen, &bad);
  if (!name || nlen == 0 || bad_text(name, nlen))
    err = part_err(t, i, "name must be a non-empty string without quotes or line breaks%s", NULL);
  else if (bad) err = part_err(t, i, "path, data, type and filename must be strings%s", NULL);
  else if ((path == NULL) == (data == NULL)) err = part_err(t, i, "needs exactly one of path (a file) or data (a field)%s", NULL);
  else if (path && (plen == 0 || memchr(path, '\0', plen))) err = part_err(t, i, "path is empty or holds a NUL byte%s", NULL);
  else if (type && (tlen == 0 || bad_text(type, tlen))) err = part_err(t, i, "type must be a content type without quotes or line breaks%s", NULL);
  else if (filename && (flen == 0 || bad_text(filename, flen) || strchr(filename, '/')))
    err = part_err(t, i, "filename must be a base name without quotes, slashes or line breaks%s", NULL);
  else if (data && (type || filename)) err = part_err(t, i, "type and filename belong to file parts (path)%s", NULL);
  if (!err && path) {
    struct stat st;
    if (stat(path, &st) != 0) err = part_err(t, i, "cannot read the file: %s", strerror(errno));
    else if (!S_ISREG(st.st_mode)) err = part_err(t, i, "path is not a regular file%s", NULL);
  }
  if (!err) {
    part = curl_mime_addpart(t->mime); /* owned by t->mime from here */
    if (!part) err = "out of memory";
    else if (curl_mime_name(part, name) != CURLE_OK) err = "out of memory";
    else if (path) {
      if (curl_mime_filedata(part, path) != CURLE_OK) err = part_err(t, i, "cannot use the file%s", NULL);
      else if (filename && curl_mime_filename(part, filename) != CURLE_OK) err = "out of memory";
      else if (type && curl_mime_type(part, type) != CURLE_OK) err = "out of memory";
    } else if (curl_mime_data(part, data, dlen) != CURLE_OK) {
      err = "out of memory";
    }
  }
  lua_settop(L, base);
  return err;
}

const char *tk_mime_setup(lua_State *L, int ridx, tk_transfer *t)
{
  size_t i, n;
  const char *err = NULL;
  lua_getfield(L, ridx, "mime");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (!lua_istable(L, -1)) return "req.mime must be an array of parts";
  n = tk_rawlen(L, -1);
  if (n == 0) return "req.mime must hold at least one part";
  if (n > 64) return "req.mime holds more than 64 parts";
  t->mime = curl_mime_init(t->easy);
  if (!t->mime) return "out of memory";
  for (i = 1; i <= n && !err; i++) {
    lua_rawgeti(L, -1, (int)i);
    if (!lua_istable(L, -1)) err = part_err(t, (int)i, "each part must be a table%s", NULL);
    else err = add_part(L, t, (int)i);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (err) return err; /* t->mime is released with the transfer */
  curl_easy_setopt(t->easy, CURLOPT_MIMEPOST, t->mime);
  return NULL;
}

void tk_mime_free(tk_transfer *t)
{
  if (t->mime) curl_mime_free(t->mime);
  t->mime = NULL;
}
