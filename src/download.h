/* download.h: download mode (download.c): a transfer that streams its body into a part file, verified and renamed when complete; core.place and core.remove_part. */
#ifndef TK_DOWNLOAD_H
#define TK_DOWNLOAD_H

#include "transport.h"

/* Reads the download fields of the req table at index idx; returns NULL or an error text. */
const char *tk_dl_setup(lua_State *L, int idx, tk_transfer *t);
size_t tk_dl_write(char *p, size_t size, size_t nmemb, void *ud);
/* After the transfer finished (t->code, t->status set): verify, rename or clean up. */
void tk_dl_finish(tk_transfer *t);
/* Aborts a running download: closes the file and removes the part file. */
void tk_dl_abort(tk_transfer *t);
void tk_dl_free(tk_dl *d);
void tk_dl_progress(const tk_transfer *t, long long *done, long long *total);
/* Adds path, bytes, resumed, filename to the res table at the top of the stack. */
void tk_dl_push_result(lua_State *L, tk_transfer *t);
/* At module open: adds to the module table on the stack top
 *   core.place(from, to, overwrite) -> true | nil, err: a rename that never replaces `to`
 *     unless overwrite (renameat2 RENAME_NOREPLACE, else link+unlink);
 *   core.remove_part(path) -> true | false, why: unlinks a part file only when it is a
 *     regular file (never through a symlink) that no other download holds locked. */
void tk_download_open(lua_State *L);

#endif
