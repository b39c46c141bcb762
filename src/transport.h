/* transport.h: the structures of the transfer engine that its files share: the multi
 * handle, the transfer and its download and body-file state. Each file of the engine
 * declares its functions in its own header: buf.h (buffers, headers, a transfer's own
 * error), request.h (building a transfer), result.h (its result or error), download.h,
 * mime.h, pool.h, sockets.h; transport.c has the multi and transfer objects. */
#ifndef TK_TRANSPORT_H
#define TK_TRANSPORT_H

#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "buf.h"
#include "compat.h"
#include "http1.h"

#define TK_VERSION "0.1.0"
#define TK_MULTI_MT "taskapi.core.multi"
#define TK_TRANSFER_MT "taskapi.core.transfer"
#define TK_MAX_HEADER_BYTES (256u * 1024u)
#define TK_ERROR_BODY_MAX (64u * 1024u)
#define TK_POOL_MAX 128 /* idle easy handles a multi keeps (pool.c) */
#define TK_TRACE_HDR_MAX 64 /* bytes of req.trace_header */

/* Download mode state (req.path set); owned by its transfer, released by tk_dl_free. */
typedef struct tk_dl {
  int active;
  char *path, *part;     /* malloc'd copies */
  int resume, keep_partial;
  long long max_bytes;   /* -1: no limit */
  long long offset;      /* part file size when a Range was sent */
  int range_sent;
  int fd;                /* -1 when closed */
  int decided;           /* the final response's status has been seen */
  int discard;           /* non-2xx: the body goes to memory (64 KiB), not to the file */
  int resumed;           /* a 206 continued the part file */
  int part_regular;      /* the part file is a regular file (only those are unlinked) */
  long long written;     /* bytes written to the file by this transfer */
  long long expected;    /* expected final file size, -1 when unknown */
  long long bytes;       /* final size after a successful rename */
  int renamed;
  int overwrite;         /* req.overwrite: the final rename may replace path */
  long long part_dev, part_ino; /* identity of the part file held open (and flock'ed) */
  long long min_speed;   /* req.min_speed bytes/s on average (0: no floor) ... */
  long long min_speed_ms; /* ... checked once this many ms have passed (req.min_speed_time) */
  long long start_ms;    /* monotonic ms at setup */
} tk_dl;

/* req.body_file: the request body read from one file (mime.c); the FILE is owned by its
 * transfer and closed once, by tk_mime_free. */
typedef struct tk_body_file {
  FILE *fp;              /* NULL when none, or once closed */
  int active;            /* the transfer sends a body file (stays set after the close) */
  long long size;        /* fstat size at setup: the Content-Length sent */
  long long sent;        /* bytes handed to libcurl so far (progress) */
} tk_body_file;

enum { TK_RUNNING = 1, TK_DONE, TK_CANCELLED, TK_CLOSED };

/* A server's address on the plain-HTTP path (IPv4 or IPv6 only: no sockaddr_storage, whose
 * 128 bytes every transfer would carry). */
typedef union tk_addr {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} tk_addr;

/* A transfer on the plain-HTTP path (lean.c): an API call to an http:// URL with a numeric
 * host, run by our own HTTP/1.1 client instead of libcurl. Owned by its transfer: the fd
 * (until it goes back to the multi's idle list or is closed) and the request buffer. */
typedef struct tk_lean {
  int active;                      /* this transfer runs on the plain-HTTP path */
  int state;                       /* lean.c's L_* */
  int fd;                          /* -1 when none */
  int reused;                      /* fd came from the idle list */
  int fresh;                       /* req.fresh_connect: new connection, closed after */
  int retried;                     /* a stale kept-alive connection was replaced once */
  int got;                         /* a byte of the current response has arrived */
  int head_only;                   /* HEAD: no body whatever the head says */
  int body_mode;                   /* L_BODY_* */
  const char *method;              /* the request's method (a literal of lean.c's) */
  int framed;                      /* the request sends Content-Length (and its body) */
  int user_host;                   /* the caller's own Host header is among its lines */
  int keep;                        /* the connection can be reused after this response */
  long long clen;                  /* Content-Length of the body, -1 none */
  tk_addr addr;                    /* the server */
  socklen_t alen;
  tk_buf req;                      /* the request's bytes */
  size_t sent;                     /* bytes of req written on the current connection */
  size_t hdrs_at, hdrs_len;        /* User-Agent and req.headers lines inside req */
  size_t body_at;                  /* the body inside req (to req.len) */
  long long start_ms, deadline_ms, connect_ms, stall_ms, last_ms;
  tk_h1_chunked ch;
  long handed_hops;                /* redirects followed here before libcurl took over */
  double handed_time;              /* seconds spent here before that */
} tk_lean;

struct tk_multi;

typedef struct tk_transfer {
  CURL *easy;                      /* NULL once finished or aborted */
  struct tk_multi *m;              /* set while running or waiting in the done list */
  struct tk_transfer *prev, *next; /* the multi's list of running transfers */
  struct tk_transfer *done_next;   /* the multi's done list */
  int state;
  int in_done;
  CURLcode code;
  struct curl_slist *slist;
  curl_mime *mime;                 /* req.mime body (mime.c), NULL when none */
  tk_body_file bf;                 /* req.body_file body (mime.c) */
  char errbuf[CURL_ERROR_SIZE];
  double timeout, low_speed_time;
  long low_speed_limit, max_redirects;
  int json;
  int res_headers;                 /* build res.headers (req.response_headers ~= false) */
  size_t max_body;
  char *url;                       /* the request URL (malloc'd), for hostport on errors */
  char trace_hdr[TK_TRACE_HDR_MAX + 1]; /* req.trace_header as given ("" when none): */
  size_t trace_hdr_len;            /* copied, not allocated: it is set on every API call */
  tk_buf hdr;                      /* raw header lines of the last response */
  tk_buf body;                     /* memory mode body, or the error body of a download */
  /* an error our own callbacks recorded; it wins over the CURLcode */
  const char *err_kind;
  char *err_msg;                   /* its text, malloc'd on first use (TK_ERR_MSG_MAX) */
  int err_retryable;
  /* captured at completion */
  long status, redirects;
  long request_size;             /* bytes of the request sent (CURLINFO_REQUEST_SIZE; -1 unknown) */
  double total_time;
  long long final_done, final_total; /* memory mode progress at completion */
  char *effective_url;
  time_t done_at;
  tk_dl dl;
  tk_lean lean;
} tk_transfer;

/* The sockets libcurl asked us to watch and its timer (sockets.c). */
struct tk_ready {
  curl_socket_t fd;
  int ev;
  void *owner;                     /* the plain-HTTP transfer of fd, NULL for libcurl's */
};
typedef struct tk_socks {
  struct pollfd *fds;              /* watched sockets, with the events curl wants */
  struct tk_ready *ready;          /* scratch: the ready ones of one step (same capacity) */
  void **owner;                    /* per watched socket: its plain-HTTP transfer or NULL */
  int n, cap;
  int fresh;                       /* revents hold what the last wait's poll() saw */
  long long due;                   /* monotonic ms when curl wants to run; -1: no timer */
} tk_socks;

typedef struct tk_multi {
  CURLM *cm;
  tk_socks socks;
  tk_transfer *head;               /* running transfers */
  tk_transfer *done_head, *done_tail;
  int running;
  int closed;
  CURL *pool[TK_POOL_MAX];         /* idle easy handles, reset (pool.c) */
  int npool;
  /* the plain-HTTP path (lean.c) */
  int lean_ok;                     /* no proxy in the environment, no per-host limit */
  int lean_running;                /* running transfers on it */
  int max_idle;                    /* idle connections kept */
  struct tk_conn *idle;            /* kept-alive connections, oldest first */
  int nidle;
  char *scratch;                   /* the receive buffer of every plain-HTTP read */
  char ua[128];                    /* the default User-Agent */
  long long n_plain, n_curl, n_handed; /* transfers started on each path, handed over (m:stats) */
} tk_multi;

/* transport.c */
/* Queues finished transfer t in m's done list, out of the running ones; its fields are set. */
void tk_transfer_done(tk_multi *m, tk_transfer *t);
/* core.multi(opts): a new multi handle. */
int tk_multi_new(lua_State *L);
/* At module open: registers the multi and transfer classes. */
void tk_transport_open(lua_State *L);

#endif
