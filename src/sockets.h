/* sockets.h: how a multi waits (sockets.c): the sockets and timer libcurl asks for, and the
 * sockets of the plain-HTTP path (lean.c). */
#ifndef TK_SOCKETS_H
#define TK_SOCKETS_H

#include "transport.h"

/* Installs the socket and timer callbacks on m->cm (right after curl_multi_init). */
void tk_socks_init(tk_multi *m);
/* Frees the watch list; after curl_multi_cleanup. */
void tk_socks_free(tk_multi *m);
/* Watches fd for events (POLLIN, POLLOUT) on behalf of owner (a plain-HTTP transfer; NULL:
 * libcurl's socket), or changes what is watched. 0, or -1 when out of memory. */
int tk_socks_watch(tk_socks *s, int fd, int events, void *owner);
/* Stops watching fd (nothing when it is not watched). */
void tk_socks_unwatch(tk_socks *s, int fd);
/* One non-blocking step: socket actions for the ready sockets and for a due timer. */
void tk_socks_drive(tk_multi *m);
/* Blocks until a watched socket is ready, curl's timer is due or max_ms have passed;
 * returns the number of ready sockets. */
int tk_socks_wait(tk_multi *m, long max_ms);

#endif
