/* request.h: building a transfer from a req table (request.c): the fields every transfer
 * has read and checked once (tk_request_read), then libcurl configured from them
 * (tk_request_setup) or the plain-HTTP path (lean.c). */
#ifndef TK_REQUEST_H
#define TK_REQUEST_H

#include "transport.h"

/* The checked fields of a req table that are not kept in the transfer itself; the strings
 * belong to the req table and are valid while it is. */
typedef struct tk_req {
  size_t url_len;        /* the URL itself is t->url */
  int https;
  const char *ua;        /* req.user_agent, NULL for the default */
  size_t ua_len;
  size_t nheaders;       /* entries of req.headers (checked) */
  const char *method;    /* "GET" when not given; the name is checked by the setup */
  const char *body;      /* req.body or NULL */
  size_t body_len;
  const char *ca_file;
  int insecure, fresh;
  double connect_timeout;
  int special;           /* req.path, req.mime or req.body_file: libcurl only */
} tk_req;

/* Reads and checks the common fields of the req table at ridx into t and r. Returns NULL
 * or an invalid_argument message. */
const char *tk_request_read(lua_State *L, int ridx, tk_transfer *t, tk_req *r);
/* Configures t->easy from r and the req table at ridx; the transfer userdata is at tidx.
 * Returns NULL or an invalid_argument message (a literal, or t's own error buffer). */
const char *tk_request_setup(lua_State *L, int ridx, int tidx, tk_transfer *t, const tk_req *r);
/* Configures t->easy (taken already) for the rest of an API call the plain-HTTP path hands
 * over at a redirect it cannot follow (lean.c). Returns NULL or a message. */
const char *tk_request_setup_handoff(tk_transfer *t, const char *url, const char *method,
                                     const char *body, size_t body_len, int has_body,
                                     const char *hdrs, size_t hdrs_len, double timeout_left,
                                     double connect_timeout, int fresh);
/* NULL, or the message for a body given to a method that takes none (GET, HEAD). */
const char *tk_request_body_rule(const char *method, int has_body);

#endif
