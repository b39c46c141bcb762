/* mime.c: request bodies from files for taskapi.core.
 * - req.mime: multipart/form-data, built with libcurl's mime API. A part is either a file,
 *   {name=, path=, type=?, filename=?}, which libcurl streams from disk while sending
 *   (curl_mime_filedata: the file is never read into Lua or into memory), or a plain field,
 *   {name=, data=} (copied by libcurl).
 * - req.body_file: the whole body of a PUT or POST is one file, sent as it is (a presigned
 *   upload to a storage host), read by our read callback in libcurl's chunks, with its size
 *   at setup (fstat) as Content-Length and req.body_type (or nothing) as Content-Type. A
 *   seek callback lets libcurl rewind it (a redirect, a reused connection that closed). A
 *   file that shrinks or cannot be read while sending ends the transfer as kind io.
 * Ownership: the curl_mime handle (t->mime) and the body file's FILE (t->bf.fp) belong to
 * their transfer from the moment they are made; tk_mime_free is their one, idempotent
 * release, called once the easy handle that uses them is gone (transfer finished, aborted or
 * released, including a setup that failed). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "mime.h"
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

/* ---------------------------------------------------------------- req.body_file */

static size_t body_read(char *buf, size_t size, size_t nitems, void *ud)
{
  tk_transfer *t = (tk_transfer *)ud;
  tk_body_file *bf = &t->bf;
  size_t want = size * nitems, n;
  long long left = bf->size - bf->sent;
  if (left <= 0 || !bf->fp) return 0;
  if ((long long)want > left) want = (size_t)left;
  n = fread(buf, 1, want, bf->fp);
  if (n == 0) {
    if (ferror(bf->fp))
      tk_set_err(t, "io", 0, "cannot read the file to send: %s", strerror(errno));
    else
      tk_set_err(t, "io", 0, "the file to send shrank while sending (%lld of %lld bytes read)",
                 bf->sent, bf->size);
    return CURL_READFUNC_ABORT;
  }
  bf->sent += (long long)n;
  return n;
}

static int body_seek(void *ud, curl_off_t offset, int origin)
{
  tk_transfer *t = (tk_transfer *)ud;
  tk_body_file *bf = &t->bf;
  if (!bf->fp || origin != SEEK_SET) return CURL_SEEKFUNC_CANTSEEK;
  if (offset < 0 || (long long)offset > bf->size) return CURL_SEEKFUNC_FAIL;
  clearerr(bf->fp);
  if (fseeko(bf->fp, (off_t)offset, SEEK_SET) != 0) return CURL_SEEKFUNC_FAIL;
  bf->sent = (long long)offset;
  return CURL_SEEKFUNC_OK;
}

static int slist_has(const struct curl_slist *s, const char *name)
{
  size_t n = strlen(name);
  for (; s; s = s->next)
    if (strncasecmp(s->data, name, n) == 0 && s->data[n] == ':') return 1;
  return 0;
}

static const char *body_err(tk_transfer *t, const char *what, const char *detail)
{
  char *b = tk_err_buf(t);
  if (!b) return "req.body_file: out of memory";
  snprintf(b, TK_ERR_MSG_MAX, "req.body_file: %s: %s", what, detail);
  return b;
}

const char *tk_body_file_setup(lua_State *L, int ridx, tk_transfer *t)
{
  CURL *e = t->easy;
  const char *path, *method = "GET", *type = NULL;
  size_t plen, tlen = 0;
  struct stat st;
  int put, base = lua_gettop(L);
  const char *err = NULL;

  lua_getfield(L, ridx, "body_file");
  if (lua_isnil(L, -1)) {
    lua_settop(L, base);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) return "req.body_file must be a path (a string)";
  path = lua_tolstring(L, -1, &plen);
  lua_getfield(L, ridx, "method");
  if (lua_type(L, -1) == LUA_TSTRING) method = lua_tostring(L, -1);
  lua_getfield(L, ridx, "body");
  lua_getfield(L, ridx, "body_type");
  if (plen == 0 || memchr(path, '\0', plen)) err = "req.body_file is empty or holds a NUL byte";
  else if (t->mime) err = "req.mime and req.body_file exclude each other";
  else if (!lua_isnil(L, -2)) err = "req.body and req.body_file exclude each other";
  else if (strcmp(method, "PUT") != 0 && strcmp(method, "POST") != 0)
    err = "req.body_file needs method PUT or POST";
  else if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    err = "req.body_type must be a string";
  if (!err && lua_type(L, -1) == LUA_TSTRING) {
    size_t i;
    type = lua_tolstring(L, -1, &tlen);
    for (i = 0; i < tlen; i++)
      if (type[i] == '\r' || type[i] == '\n' || type[i] == '\0') break;
    if (tlen == 0 || i < tlen) err = "req.body_type must be a content type without line breaks";
    else if (tlen > 256) err = "req.body_type is longer than 256 bytes";
    else if (slist_has(t->slist, "Content-Type"))
      err = "req.body_type and a Content-Type header in req.headers exclude each other";
  }
  if (err) return err; /* the caller drops the stack */
  put = strcmp(method, "PUT") == 0;
  /* stat first: opening a FIFO would block */
  if (stat(path, &st) != 0) return body_err(t, "cannot read the file", strerror(errno));
  if (!S_ISREG(st.st_mode)) return "req.body_file is not a regular file";
  t->bf.fp = fopen(path, "rbe"); /* owned by t from here: tk_mime_free closes it */
  if (!t->bf.fp) return body_err(t, "cannot open the file", strerror(errno));
  if (fstat(fileno(t->bf.fp), &st) != 0) return body_err(t, "cannot read the file", strerror(errno));
  if (!S_ISREG(st.st_mode)) return "req.body_file is not a regular file";
  t->bf.active = 1;
  t->bf.size = (long long)st.st_size;
  t->bf.sent = 0;
  {
    /* a Content-Type of our own, or none: "Content-Type:" removes libcurl's form default */
    char h[300];
    struct curl_slist *s;
    if (type) snprintf(h, sizeof h, "Content-Type: %s", type);
    else snprintf(h, sizeof h, "Content-Type:");
    if (type || !slist_has(t->slist, "Content-Type")) {
      s = curl_slist_append(t->slist, h);
      if (!s) return "out of memory";
      t->slist = s; /* setup() sets CURLOPT_HTTPHEADER from t->slist afterwards */
    }
  }
  curl_easy_setopt(e, CURLOPT_READFUNCTION, body_read);
  curl_easy_setopt(e, CURLOPT_READDATA, (void *)t);
  curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, body_seek);
  curl_easy_setopt(e, CURLOPT_SEEKDATA, (void *)t);
  if (put) {
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)t->bf.size);
  } else {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->bf.size);
  }
  lua_settop(L, base);
  return NULL;
}

void tk_mime_free(tk_transfer *t)
{
  if (t->mime) curl_mime_free(t->mime);
  t->mime = NULL;
  if (t->bf.fp) fclose(t->bf.fp);
  t->bf.fp = NULL;
}
