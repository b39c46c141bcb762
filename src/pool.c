/* pool.c: the per-multi free list of libcurl easy handles. A finished or aborted transfer
 * gives its easy handle back to its multi instead of destroying it, and the next m:add takes
 * one from the list instead of calling curl_easy_init (the Curl_easy allocation and its
 * defaults, the largest per-call allocation in C).
 * Ownership: a handle on the list belongs to the multi alone (no transfer points at it, it
 * is not added to the CURLM); it is curl_easy_reset when it goes back, so no option, pointer
 * (error buffer, header list, mime, private) or callback of its last transfer survives; what
 * reset keeps (live connections, the DNS and TLS session caches) is what keep-alive wants.
 * libcurl's connection cache lives in the multi, so pooling changes no connection reuse.
 * The list holds at most TK_POOL_MAX handles (more are cleaned up at once) and is emptied
 * by tk_pool_free, which multi_close calls before curl_multi_cleanup. */
#include "pool.h"
#include "transport.h"

CURL *tk_pool_get(tk_multi *m)
{
  if (m->npool > 0) return m->pool[--m->npool];
  return curl_easy_init();
}

void tk_pool_put(tk_multi *m, CURL *e)
{
  if (!e) return;
  if (!m || m->closed || m->npool >= TK_POOL_MAX) {
    curl_easy_cleanup(e);
    return;
  }
  curl_easy_reset(e);
  m->pool[m->npool++] = e;
}

void tk_pool_free(tk_multi *m)
{
  while (m->npool > 0) curl_easy_cleanup(m->pool[--m->npool]);
}
