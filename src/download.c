/* download.c: download mode (req.path set). The body streams from libcurl's write callback
 * straight into a file descriptor on req.part, never through a Lua string; resume with
 * Range, restart on a 200, verify the length, then rename(part, path). Owns the fd and the
 * part file's fate: renamed on success; on failure kept only with req.keep_partial, else
 * unlinked (only ever a regular file).
 * The part file is opened when the request is added, without following a symlink
 * (O_NOFOLLOW; created with O_EXCL), must be a regular file with no other hard link, and
 * is held with an exclusive flock(2) for the whole transfer: a second download of the same part gets an "io" error
 * (busy) at once instead of writing into it, and a killed process's lock dies with it, so the
 * next run may resume its part. Every unlink or rename of the part happens while the lock is
 * held and only after checking that the name still points at the inode we hold. The final
 * rename never replaces an existing file unless req.overwrite (renameat2 RENAME_NOREPLACE;
 * link+unlink where that is not supported). The data is fsync'ed before the rename.
 * req.min_speed: a floor on the average speed of this transfer (bytes/s), checked from
 * libcurl's progress callback once req.min_speed_time seconds have passed; under it the
 * transfer ends with a "timeout" error (not retryable). libcurl's LOW_SPEED limit only catches
 * a stall; a host trickling a few bytes a second passes it.
 * SIGXFSZ: a write past RLIMIT_FSIZE kills the process by default. We install no signal
 * handler (a library must not); a caller that ignores SIGXFSZ gets EFBIG, reported as an
 * "io" error like ENOSPC. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "clock.h"
#include "errors.h"
#include "parse.h"
#include "download.h"
#include "transport.h"

static char *dupstr(const char *s)
{
  size_t n = strlen(s) + 1;
  char *p = (char *)malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static void set_io_err(tk_transfer *t, const char *what, int e)
{
  tk_set_err(t, "io", 0, "%s %s: %s", what, t->dl.part, strerror(e));
}

/* Does `name` still point at the inode of fd (dev, ino)? */
static int same_file(const char *name, long long dev, long long ino)
{
  struct stat st;
  return lstat(name, &st) == 0 && (long long)st.st_dev == dev && (long long)st.st_ino == ino;
}

/* Opens the part file without following a symlink, checks it is a regular file and takes
 * its exclusive lock. Returns the fd (size in *size), or -1 with errno set; EWOULDBLOCK when
 * another download holds it, ELOOP for a symlink, EINVAL for anything else that is not a
 * regular file, EMLINK for a file with other hard links (writing would change them too),
 * ENOENT when absent and not `create`. */
static int lock_part(const char *part, int create, long long *dev, long long *ino,
                     long long *size)
{
  int tries;
  for (tries = 0; tries < 8; tries++) {
    struct stat st;
    int fd = open(part, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && create) {
      fd = open(part, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
      if (fd < 0 && errno == EEXIST) continue; /* another process made it: look again */
    }
    if (fd < 0) {
      if (errno == EISDIR) errno = EINVAL; /* a folder: not a regular file either */
      return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
      int e = S_ISREG(st.st_mode) && st.st_nlink > 1 ? EMLINK : EINVAL;
      close(fd);
      errno = e;
      return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      close(fd);
      errno = e == EAGAIN ? EWOULDBLOCK : e;
      return -1;
    }
    if (!same_file(part, (long long)st.st_dev, (long long)st.st_ino)) {
      close(fd); /* renamed or removed by its owner meanwhile: start again */
      if (!create) {
        errno = ENOENT;
        return -1;
      }
      continue;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    *dev = (long long)st.st_dev;
    *ino = (long long)st.st_ino;
    *size = (long long)st.st_size;
    return fd;
  }
  errno = EWOULDBLOCK;
  return -1;
}

/* The io error of a failed lock_part, on t. */
static void lock_err(tk_transfer *t, int e)
{
  const char *part = t->dl.part;
  if (e == EWOULDBLOCK)
    tk_set_err(t, "io", 0, "part file %s is being written by another download (locked)", part);
  else if (e == ELOOP)
    tk_set_err(t, "io", 0, "part file %s is a symbolic link (not followed)", part);
  else if (e == EINVAL)
    tk_set_err(t, "io", 0, "part file %s is not a regular file", part);
  else if (e == EMLINK)
    tk_set_err(t, "io", 0, "part file %s has other hard links (not written through)", part);
  else
    set_io_err(t, "cannot open", e);
}

static int tk_dl_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow);

const char *tk_dl_setup(lua_State *L, int idx, tk_transfer *t)
{
  tk_dl *d = &t->dl;
  const char *path, *part;
  long long size = 0;
  double ms;
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
  lua_getfield(L, idx, "overwrite");
  d->overwrite = lua_toboolean(L, -1);
  lua_pop(L, 3);
  lua_getfield(L, idx, "max_bytes");
  if (lua_isnumber(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    d->max_bytes = n < 0 ? 0 : (long long)n;
  } else if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return "req.max_bytes must be a number";
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "min_speed");
  if (lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 0) {
    d->min_speed = (long long)lua_tonumber(L, -1);
  } else if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return "req.min_speed must be a number of bytes per second (0 or more)";
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "min_speed_time");
  ms = 30;
  if (lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 0) {
    ms = (double)lua_tonumber(L, -1);
  } else if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return "req.min_speed_time must be a number of seconds (0 or more)";
  }
  lua_pop(L, 1);
  d->min_speed_ms = (long long)(ms * 1000);
  d->start_ms = tk_monotonic_ms();
  if (d->min_speed > 0) {
    curl_easy_setopt(t->easy, CURLOPT_XFERINFOFUNCTION, tk_dl_xferinfo);
    curl_easy_setopt(t->easy, CURLOPT_XFERINFODATA, (void *)t);
    curl_easy_setopt(t->easy, CURLOPT_NOPROGRESS, 0L);
  }
  d->fd = lock_part(d->part, 1, &d->part_dev, &d->part_ino, &size);
  if (d->fd < 0) {
    lock_err(t, errno);
    return t->err_msg ? t->err_msg : "cannot open the part file";
  }
  d->part_regular = 1;
  if (!d->resume && size > 0) {
    if (ftruncate(d->fd, 0) != 0) {
      set_io_err(t, "cannot truncate", errno);
      return t->err_msg ? t->err_msg : "cannot truncate the part file";
    }
  } else if (d->resume && size > 0) {
    char range[64];
    struct curl_slist *s;
    d->offset = size;
    snprintf(range, sizeof range, "Range: bytes=%lld-", d->offset);
    s = curl_slist_append(t->slist, range);
    if (!s) return "out of memory";
    t->slist = s;
    d->range_sent = 1;
  }
  return NULL;
}

static int tk_dl_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow)
{
  tk_transfer *t = (tk_transfer *)ud;
  tk_dl *d = &t->dl;
  long long el = tk_monotonic_ms() - d->start_ms;
  (void)dltotal, (void)ultotal, (void)ulnow;
  if (d->min_speed > 0 && el >= d->min_speed_ms && el > 0 &&
      (double)dlnow * 1000.0 < (double)d->min_speed * (double)el) {
    tk_set_err(t, "timeout", 0,
               "too slow: %lld bytes in %.1f s (%.1f bytes/s on average, under min_speed %lld "
               "bytes/s)", (long long)dlnow, el / 1000.0, (double)dlnow * 1000.0 / el,
               d->min_speed);
    return 1;
  }
  return 0;
}

/* Places the part file's data for the final response: from the start (truncated) or, for a
 * resumed 206, right after the bytes we had. 0 on success, -1 with an error recorded. */
static int position_part(tk_transfer *t, int append)
{
  tk_dl *d = &t->dl;
  off_t at = append ? (off_t)d->offset : 0;
  if (d->fd < 0) {
    tk_set_err(t, "io", 0, "part file %s is not open", d->part);
    return -1;
  }
  if (ftruncate(d->fd, at) != 0 || lseek(d->fd, at, SEEK_SET) < 0) {
    set_io_err(t, "cannot prepare", errno);
    return -1;
  }
  return 0;
}

static void truncate_part(tk_transfer *t)
{
  if (t->dl.fd >= 0 && ftruncate(t->dl.fd, 0) != 0) { /* best effort */ }
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
    if (position_part(t, d->resumed) != 0) return -1;
  } else {
    d->resumed = 0;
    if (cl >= 0) d->expected = (long long)cl;
    if (position_part(t, 0) != 0) return -1;
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

/* rename(from, to) that fails with EEXIST instead of replacing `to` (unless overwrite):
 * renameat2(RENAME_NOREPLACE); where the filesystem does not support it, link(2) then
 * unlink(2); where neither works (no hard links), a check then rename, which a concurrent
 * writer of `to` could still race. 0 or -1 with errno. */
static int place(const char *from, const char *to, int overwrite)
{
  struct stat st;
  if (overwrite) return rename(from, to);
#ifdef RENAME_NOREPLACE
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP && errno != EOPNOTSUPP) return -1;
#endif
  if (link(from, to) == 0) {
    unlink(from);
    return 0;
  }
  if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP && errno != ENOSYS) return -1;
  if (lstat(to, &st) == 0) {
    errno = EEXIST;
    return -1;
  }
  return rename(from, to);
}

static void close_fd(tk_transfer *t)
{
  if (t->dl.fd >= 0) {
    close(t->dl.fd); /* drops the lock */
    t->dl.fd = -1;
  }
}

/* Unlinks the part file while we still hold it (and only if its name is still ours). */
static void remove_part(tk_transfer *t)
{
  tk_dl *d = &t->dl;
  if (d->fd >= 0 && same_file(d->part, d->part_dev, d->part_ino)) unlink(d->part);
}

static void set_place_err(tk_transfer *t, int e)
{
  tk_dl *d = &t->dl;
  if (e == EEXIST)
    tk_set_err(t, "io", 0, "file %s exists: not replaced (overwrite not set)", d->path);
  else
    tk_set_err(t, "io", 0, "cannot rename %s to %s: %s", d->part, d->path, strerror(e));
}

void tk_dl_finish(tk_transfer *t)
{
  tk_dl *d = &t->dl;
  int ok = 0;
  if (!t->err_kind && t->code == CURLE_OK && t->status >= 200 && t->status <= 299) {
    if (!d->decided) decide(t); /* an empty body: the (empty) file is placed now */
    if (!t->err_kind && d->fd >= 0) {
      long long size = (d->resumed ? d->offset : 0) + d->written;
      if (d->expected >= 0 && size != d->expected) {
        tk_set_err(t, "download", 1, "length mismatch: got %lld of %lld bytes", size,
                   d->expected);
      } else if (d->max_bytes >= 0 && size > d->max_bytes) {
        tk_set_err(t, "download", 0, "download larger than max_bytes (%lld bytes)",
                   d->max_bytes);
      } else if (fsync(d->fd) != 0) {
        set_io_err(t, "cannot write", errno);
      } else if (!same_file(d->part, d->part_dev, d->part_ino)) {
        tk_set_err(t, "io", 0, "part file %s was moved or replaced during the download",
                   d->part);
      } else if (place(d->part, d->path, d->overwrite) != 0) {
        set_place_err(t, errno);
      } else {
        d->renamed = 1;
        d->bytes = size;
        ok = 1;
      }
    }
  } else if (!t->err_kind && t->code == CURLE_OK && t->status == 416 && d->range_sent) {
    truncate_part(t);
    tk_set_err(t, "download", 1, "range not satisfiable (416) when resuming at byte %lld",
               d->offset);
  }
  if (!ok && !d->keep_partial) remove_part(t);
  close_fd(t);
}

void tk_dl_abort(tk_transfer *t)
{
  if (!t->dl.active) return;
  remove_part(t);
  close_fd(t);
}

void tk_dl_free(tk_dl *d)
{
  if (d->fd >= 0) close(d->fd);
  d->fd = -1;
  free(d->path);
  free(d->part);
  d->path = d->part = NULL;
}

static int l_place(lua_State *L)
{
  const char *from = luaL_checkstring(L, 1), *to = luaL_checkstring(L, 2);
  int overwrite = lua_toboolean(L, 3), e;
  char msg[TK_ERR_MSG_MAX];
  if (place(from, to, overwrite) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  e = errno;
  if (e == EEXIST) snprintf(msg, sizeof msg, "file %s exists: not replaced (overwrite not set)", to);
  else snprintf(msg, sizeof msg, "cannot rename %s to %s: %s", from, to, strerror(e));
  return tk_fail(L, "io", msg, -1, -1, 0);
}

static int l_remove_part(lua_State *L)
{
  const char *part = luaL_checkstring(L, 1);
  long long dev, ino, size;
  int fd = lock_part(part, 0, &dev, &ino, &size);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) {
      lua_pushboolean(L, 1);
      return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, e == EWOULDBLOCK ? "locked by another download" :
                      e == ELOOP ? "a symbolic link" : e == EINVAL ? "not a regular file" :
                      e == EMLINK ? "has other hard links" :
                      strerror(e));
    return 2;
  }
  if (unlink(part) != 0) {
    int e = errno;
    close(fd);
    lua_pushboolean(L, 0);
    lua_pushstring(L, strerror(e));
    return 2;
  }
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
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

static const luaL_Reg download_funcs[] = {
  {"place", l_place},
  {"remove_part", l_remove_part},
  {NULL, NULL}};

void tk_download_open(lua_State *L)
{
  luaL_setfuncs(L, download_funcs, 0);
}
