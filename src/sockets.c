/* sockets.c: how a multi handle waits, through libcurl's socket interface. libcurl tells us
 * (CURLMOPT_SOCKETFUNCTION) which sockets it wants watched and for what, and
 * (CURLMOPT_TIMERFUNCTION) when it next needs to run; we poll() exactly those sockets and
 * call curl_multi_socket_action for the ones that are ready and for a due timer. A step
 * therefore costs in proportion to the transfers that have something to do, where
 * curl_multi_perform visits every transfer each time, idle or not (the README's design
 * notes have the measured cost).
 * The plain-HTTP path (lean.c) watches its own sockets in the same set, each marked with its
 * transfer (owner), so one poll() serves both and a ready one goes to tk_lean_io.
 * Ownership: the pollfd array belongs to the multi (tk_multi.socks), grown with realloc,
 * freed by tk_socks_free after curl_multi_cleanup (which may still report removals). */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "lean.h"
#include "sockets.h"
#include "transport.h"

static int find(const tk_socks *s, curl_socket_t fd)
{
  int i;
  for (i = 0; i < s->n; i++)
    if (s->fds[i].fd == fd) return i;
  return -1;
}

int tk_socks_watch(tk_socks *s, int fd, int events, void *owner)
{
  int i = find(s, fd);
  if (i < 0) { /* a new socket: no readiness known yet */
    if (s->n == s->cap) {
      int cap = s->cap ? s->cap * 2 : 16;
      struct pollfd *p = (struct pollfd *)realloc(s->fds, (size_t)cap * sizeof *p);
      struct tk_ready *r;
      void **o;
      if (p) s->fds = p;
      r = (struct tk_ready *)realloc(s->ready, (size_t)cap * sizeof *r);
      if (r) s->ready = r;
      o = (void **)realloc(s->owner, (size_t)cap * sizeof *o);
      if (o) s->owner = o;
      if (!p || !r || !o) return -1;
      s->cap = cap;
    }
    i = s->n++;
    s->fds[i].fd = fd;
    s->fds[i].revents = 0;
  }
  s->fds[i].events = (short)events; /* a known revents stays: select_bits masks it */
  s->owner[i] = owner;
  return 0;
}

void tk_socks_unwatch(tk_socks *s, int fd)
{
  int i = find(s, fd);
  if (i < 0) return;
  s->n--;
  s->fds[i] = s->fds[s->n];
  s->owner[i] = s->owner[s->n];
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl asks, or stop watching it. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
  tk_socks *s = (tk_socks *)userp;
  int events = 0;
  (void)easy;
  (void)socketp;
  if (what == CURL_POLL_REMOVE) {
    tk_socks_unwatch(s, fd);
    return 0;
  }
  if (what & CURL_POLL_IN) events |= POLLIN;
  if (what & CURL_POLL_OUT) events |= POLLOUT;
  /* on failure libcurl fails the transfers of this socket: nothing hangs */
  return tk_socks_watch(s, fd, events, NULL);
}

/* CURLMOPT_TIMERFUNCTION: -1 removes the timer, 0 asks to run as soon as possible. */
static int on_timer(CURLM *cm, long timeout_ms, void *userp)
{
  tk_socks *s = (tk_socks *)userp;
  (void)cm;
  s->due = timeout_ms < 0 ? -1 : tk_monotonic_ms() + timeout_ms;
  return 0;
}

void tk_socks_init(tk_multi *m)
{
  memset(&m->socks, 0, sizeof m->socks);
  m->socks.due = -1;
  curl_multi_setopt(m->cm, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(m->cm, CURLMOPT_SOCKETDATA, (void *)&m->socks);
  curl_multi_setopt(m->cm, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(m->cm, CURLMOPT_TIMERDATA, (void *)&m->socks);
}

void tk_socks_free(tk_multi *m)
{
  free(m->socks.fds);
  free(m->socks.ready);
  free(m->socks.owner);
  memset(&m->socks, 0, sizeof m->socks);
  m->socks.due = -1;
}

/* The CURL_CSELECT_* bits of a poll() result, as libcurl's own Curl_socket_check sets them. */
static int select_bits(const struct pollfd *p)
{
  int ev = 0;
  if ((p->events & POLLIN) && (p->revents & (POLLIN | POLLERR | POLLHUP))) ev |= CURL_CSELECT_IN;
  if ((p->events & POLLOUT) && (p->revents & POLLOUT)) ev |= CURL_CSELECT_OUT;
  if (p->revents & (POLLERR | POLLHUP | POLLNVAL | POLLPRI)) ev |= CURL_CSELECT_ERR;
  return ev;
}

void tk_socks_drive(tk_multi *m)
{
  tk_socks *s = &m->socks;
  int running = 0, i, nready = 0, rounds;
  /* what tk_socks_wait just saw saves a second poll(): level-triggered, so a socket found
   * ready there is still worth an action, and one it missed is seen by the next wait */
  int known = s->fresh;
  s->fresh = 0;
  if (s->n > 0 && (known || poll(s->fds, (nfds_t)s->n, 0) > 0)) {
    /* actions change the set (sockets removed, added): act on a copy of what was ready */
    for (i = 0; i < s->n; i++) {
      int ev = s->fds[i].revents ? select_bits(&s->fds[i]) : 0;
      s->fds[i].revents = 0;
      if (ev) {
        s->ready[nready].fd = s->fds[i].fd;
        s->ready[nready].ev = ev;
        s->ready[nready].owner = s->owner[i];
        nready++;
      }
    }
    for (i = 0; i < nready && !m->closed; i++) {
      if (s->ready[i].owner) tk_lean_io(m, (tk_transfer *)s->ready[i].owner, s->ready[i].ev);
      else curl_multi_socket_action(m->cm, s->ready[i].fd, s->ready[i].ev, &running);
    }
  }
  if (m->lean_running > 0) tk_lean_timers(m);
  /* a due timer; a few rounds when libcurl asks to run again at once, then the next step */
  for (rounds = 0; rounds < 4 && !m->closed && s->due >= 0 && s->due <= tk_monotonic_ms(); rounds++) {
    s->due = -1; /* the action may set a new one */
    curl_multi_socket_action(m->cm, CURL_SOCKET_TIMEOUT, 0, &running);
  }
}

int tk_socks_wait(tk_multi *m, long max_ms)
{
  tk_socks *s = &m->socks;
  long ms = max_ms;
  int r;
  long long due = s->due;
  if (m->lean_running > 0) {
    long long ld = tk_lean_next_due(m);
    if (ld >= 0 && (due < 0 || ld < due)) due = ld;
  }
  if (due >= 0) {
    long long left = due - tk_monotonic_ms();
    if (left < 0) left = 0;
    if (left < ms) ms = (long)left;
  }
  if (ms <= 0) return 0;
  r = poll(s->n > 0 ? s->fds : NULL, (nfds_t)s->n, (int)ms); /* no socket: a plain sleep */
  if (r < 0) return 0; /* EINTR and the like: the caller steps and waits again */
  s->fresh = r > 0;
  return r;
}
