/* download.c: download mode (req.path set). The body streams from libcurl's write callback
 * straight into a file descriptor on req.part, never through a Lua string; resume with
 * Range, restart on a 200, verify the length, then rename(part, path). Owns the fd and the
 * part file's fate: renamed on success; on failure kept only with req.keep_partial, else
 * unlinked (only ever a regular file).
 * SIGXFSZ: a write past RLIMIT_FSIZE kills the process by default. We install no signal
 * handler (a library must not); a caller that ignores SIGXFSZ gets EFBIG, reported as an
 * "io" error like ENOSPC. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "errors.h"
#include "parse.h"
#include "transport.h"

static char *dupstr(const char *s)
{
  size_t n = strlen(s) + 1;
  char *p = (char *)malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

const char *tk_dl_setup(lua_State *L, int idx, tk_transfer *t)
{
  tk_dl *d = &t->dl;
  const char *path, *part;
  struct stat st;
  d->fd = -1;
  d->expected = -1;
  d->max_bytes = -1;
  lua_getfield(L, idx, "path");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING || tk_rawlen(L, -1) == 0) {
    lua_pop(L, 1);
    return "req.path must be a non-empty string";
  }
  path = lua_tostring(L, -1);
  d->active = 1;
  d->path = dupstr(path);
  lua_getfield(L, idx, "part");
  if (lua_isnil(L, -1)) {
    size_t n = strlen(path) + 6;
    d->part = (char *)malloc(n);
    if (d->part) snprintf(d->part, n, "%s.part", path);
  } else if (lua_type(L, -1) == LUA_TSTRING && tk_rawlen(L, -1) > 0) {
    part = lua_tostring(L, -1);
    d->part = dupstr(part);
  } else {
    lua_pop(L, 2);
    return "req.part must be a non-empty string";
  }
  lua_pop(L, 2);
  if (!d->path || !d->part) return "out of memory";
  if (strcmp(d->path, d->part) == 0) return "req.part must differ from req.path";
  lua_getfield(L, idx, "resume");
  d->resume = lua_toboolean(L, -1);
  lua_getfield(L, idx, "keep_partial");
  d->keep_partial = lua_toboolean(L, -1);
  lua_getfield(L, idx, "max_bytes");
  if (lua_isnumber(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    d->max_bytes = n < 0 ? 0 : (long long)n;
  } else if (!lua_isnil(L, -1)) {
    lua_pop(L, 3);
    return "req.max_bytes must be a number";
  }
  lua_pop(L, 3);
  if (d->resume && stat(d->part, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    char range[64];
    struct curl_slist *s;
    d->offset = (long long)st.st_size;
    snprintf(range, sizeof range, "Range: bytes=%lld-", d->offset);
    s = curl_slist_append(t->slist, range);
    if (!s) return "out of memory";
    t->slist = s;
    d->range_sent = 1;
  }
  return NULL;
}

static int part_is_regular(const tk_dl *d)
{
  struct stat st;
  return lstat(d->part, &st) == 0 && S_ISREG(st.st_mode);
}

static void set_io_err(tk_transfer *t, const char *what, int e)
{
  tk_set_err(t, "io", 0, "%s %s: %s", what, t->dl.part, strerror(e));
}

/* Opens the part file for the final response; 0 on success, -1 with an error recorded. */
static int open_part(tk_transfer *t, int append)
{
  tk_dl *d = &t->dl;
  struct stat st;
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? 0 : O_TRUNC);
  d->fd = open(d->part, flags, 0644);
  if (d->fd < 0) {
    set_io_err(t, "cannot open", errno);
    return -1;
  }
  if (fstat(d->fd, &st) == 0) d->part_regular = S_ISREG(st.st_mode);
  if (append && d->part_regular) {
    /* continue exactly where the Range asked for */
    if (ftruncate(d->fd, (off_t)d->offset) != 0 ||
        lseek(d->fd, (off_t)d->offset, SEEK_SET) < 0) {
      set_io_err(t, "cannot extend", errno);
      return -1;
    }
  }
  return 0;
}

static void truncate_part(tk_transfer *t)
{
  if (part_is_regular(&t->dl) && truncate(t->dl.part, 0) != 0) { /* best effort */ }
}

/* Looks at the final response's status and headers before its first body byte. */
static int decide(tk_transfer *t)
{
  tk_dl *d = &t->dl;
  long status = 0;
  curl_off_t cl = -1;
  d->decided = 1;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
  if (status < 200 || status > 299) {
    d->discard = 1;
    return 0;
  }
  if (status == 206) {
    long long first, last, total;
    size_t vlen;
    const char *cr = tk_header_find(&t->hdr, "content-range", &vlen);
    long long want = d->range_sent ? d->offset : 0;
    if (!cr || tk_parse_content_range(cr, vlen, &first, &last, &total) != 0 || first != want) {
      truncate_part(t);
      tk_set_err(t, "download", 1, "unexpected Content-Range in 206 response (asked bytes=%lld-)",
                 want);
      return -1;
    }
    d->resumed = d->range_sent;
    if (total >= 0) d->expected = total;
    else if (cl >= 0) d->expected = first + (long long)cl;
    if (open_part(t, d->resumed) != 0) return -1;
  } else {
    d->resumed = 0;
    if (cl >= 0) d->expected = (long long)cl;
    if (open_part(t, 0) != 0) return -1;
  }
  if (d->max_bytes >= 0 && d->expected > d->max_bytes) {
    tk_set_err(t, "download", 0, "download of %lld bytes exceeds max_bytes (%lld bytes)",
               d->expected, d->max_bytes);
    return -1;
  }
  return 0;
}

size_t tk_dl_write(char *p, size_t size, size_t nmemb, void *ud)
{
  tk_transfer *t = (tk_transfer *)ud;
  tk_dl *d = &t->dl;
  size_t n = size * nmemb, off = 0;
  long long base;
  if (!d->decided && decide(t) != 0) return 0;
  if (d->discard) {
    if (t->body.len < TK_ERROR_BODY_MAX) {
      size_t room = TK_ERROR_BODY_MAX - t->body.len;
      if (tk_buf_append(&t->body, p, n < room ? n : room) != 0) {
        tk_set_err(t, "io", 0, "out of memory");
        return 0;
      }
    }
    return n;
  }
  if (d->fd < 0) return 0;
  base = d->resumed ? d->offset : 0;
  if (d->max_bytes >= 0 && base + d->written + (long long)n > d->max_bytes) {
    tk_set_err(t, "download", 0, "download larger than max_bytes (%lld bytes)", d->max_bytes);
    return 0;
  }
  while (off < n) {
    ssize_t w = write(d->fd, p + off, n - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      set_io_err(t, "cannot write", errno);
      return 0;
    }
    off += (size_t)w;
    d->written += w;
  }
  return n;
}

static void close_fd(tk_transfer *t, int report)
{
  if (t->dl.fd >= 0) {
    int r = close(t->dl.fd);
    int e = errno;
    t->dl.fd = -1;
    if (r != 0 && report) set_io_err(t, "cannot close", e);
  }
}

static void remove_part(tk_transfer *t)
{
  if (part_is_regular(&t->dl)) unlink(t->dl.part);
}

void tk_dl_finish(tk_transfer *t)
{
  tk_dl *d = &t->dl;
  int ok = 0;
  if (!t->err_kind && t->code == CURLE_OK && t->status >= 200 && t->status <= 299) {
    if (!d->decided) decide(t); /* an empty body: create the (empty) file now */
    if (!t->err_kind && d->fd >= 0) {
      long long size = (d->resumed ? d->offset : 0) + d->written;
      if (d->expected >= 0 && size != d->expected) {
        tk_set_err(t, "download", 1, "length mismatch: got %lld of %lld bytes", size,
                   d->expected);
      } else if (d->max_bytes >= 0 && size > d->max_bytes) {
        tk_set_err(t, "download", 0, "download larger than max_bytes (%lld bytes)",
                   d->max_bytes);
      } else {
        close_fd(t, 1);
        if (!t->err_kind) {
          if (rename(d->part, d->path) != 0) {
            tk_set_err(t, "io", 0, "cannot rename %s to %s: %s", d->part, d->path,
                       strerror(errno));
          } else {
            d->renamed = 1;
            d->bytes = size;
            ok = 1;
          }
        }
      }
    }
  } else if (!t->err_kind && t->code == CURLE_OK && t->status == 416 && d->range_sent) {
    truncate_part(t);
    tk_set_err(t, "download", 1, "range not satisfiable (416) when resuming at byte %lld",
               d->offset);
  }
  if (!ok) {
    close_fd(t, 0);
    if (!d->keep_partial) remove_part(t);
  }
}

void tk_dl_abort(tk_transfer *t)
{
  if (!t->dl.active) return;
  close_fd(t, 0);
  remove_part(t);
}

void tk_dl_free(tk_dl *d)
{
  if (d->fd >= 0) close(d->fd);
  d->fd = -1;
  free(d->path);
  free(d->part);
  d->path = d->part = NULL;
}

void tk_dl_progress(const tk_transfer *t, long long *done, long long *total)
{
  const tk_dl *d = &t->dl;
  long long base = d->decided ? (d->resumed ? d->offset : 0) : d->offset;
  *done = base + d->written;
  *total = d->expected >= 0 ? d->expected : 0;
  if (d->renamed) *done = d->bytes;
}

void tk_dl_push_result(lua_State *L, tk_transfer *t)
{
  tk_dl *d = &t->dl;
  size_t vlen;
  const char *cd;
  char name[256];
  if (!d->renamed) return;
  lua_pushstring(L, d->path);
  lua_setfield(L, -2, "path");
  tk_pushint(L, d->bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushboolean(L, d->resumed);
  lua_setfield(L, -2, "resumed");
  cd = tk_header_find(&t->hdr, "content-disposition", &vlen);
  if (cd && tk_parse_content_disposition(cd, vlen, name, sizeof name) > 0) {
    lua_pushstring(L, name);
    lua_setfield(L, -2, "filename");
  }
}
