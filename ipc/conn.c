/*
 * conn.c: one framed IPC connection on a libevent bufferevent.
 *
 * Owns the socket (closed when the connection is freed), the input
 * reassembly and the output queue. Rules kept here:
 *  - every whole frame buffered is delivered, in order, one on_frame call
 *    each; a partial frame waits (the read low watermark is set to the bytes
 *    still needed, so a large frame does not wake us for every chunk);
 *  - a bad header, an oversized length or an undecodable Envelope is a
 *    protocol violation: it is logged as a warning naming the connection and
 *    the reason, and closes this connection only, through on_close;
 *  - owner callbacks may free the connection (or close it after flushing)
 *    from inside any callback: `depth` counts callbacks on the stack and the
 *    memory is released only when it drops back to zero;
 *  - once closed (`dead`) a connection makes no further callbacks and
 *    refuses sends.
 * Writes to a peer that went away must not kill the process, so SIGPIPE is
 * set to ignored the first time a connection is made, unless the process
 * already installed its own disposition.
 *
 * Frame arena. A connection made with ipc_conn_use_frame_arena decodes its
 * Envelopes into one arena per process (the event loop's thread only):
 * every field of a decoded frame is a bump allocation, and the whole frame
 * goes at once when its callback returns, instead of one free per field.
 * Callbacks may decode nested messages into the same arena
 * (ipc_frame_allocator); frames delivered inside other callbacks take their
 * own part above the outer one's and release only that.
 */
#include "ipc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "log.h"

/* How long ipc_conn_close_after_flush waits for the peer to take our output. */
#define CONN_FLUSH_TIMEOUT_MS 1000

/* ----------------------------------------------------------- frame arena */

#define ARENA_CHUNK (64u * 1024u)  /* usual chunk; larger frames get a chunk of their size */
#define ARENA_KEEP (1024u * 1024u) /* the largest spare chunk kept for the next frame */

typedef struct arena_chunk {
    struct arena_chunk *next; /* the chunk below */
    size_t size, used;
    _Alignas(16) unsigned char data[];
} arena_chunk_t;

typedef struct arena_mark {
    arena_chunk_t *head;
    size_t used;
} arena_mark_t;

static arena_chunk_t *arena_head;  /* chunk being filled */
static arena_chunk_t *arena_spare; /* one released chunk, kept for reuse */
static int arena_depth;            /* frames decoded into the arena, on the stack */

static void *arena_alloc(void *data, size_t n)
{
    (void)data;
    n = (n + 15u) & ~(size_t)15u;
    if (!arena_head || arena_head->size - arena_head->used < n) {
        arena_chunk_t *c = NULL;
        if (arena_spare && arena_spare->size >= n) {
            c = arena_spare;
            arena_spare = NULL;
        } else {
            size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
            c = malloc(sizeof *c + size);
            if (!c)
                return NULL;
            c->size = size;
        }
        c->used = 0;
        c->next = arena_head;
        arena_head = c;
    }
    void *p = arena_head->data + arena_head->used;
    arena_head->used += n;
    return p;
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* released with the frame */
}

static ProtobufCAllocator arena_allocator = {.alloc = arena_alloc, .free = arena_free, .allocator_data = NULL};

static arena_mark_t arena_mark(void) { return (arena_mark_t){arena_head, arena_head ? arena_head->used : 0}; }

/* Drop everything allocated since m. */
static void arena_release(arena_mark_t m)
{
    while (arena_head && arena_head != m.head) {
        arena_chunk_t *c = arena_head;
        arena_head = c->next;
        if (c->size <= ARENA_KEEP && (!arena_spare || arena_spare->size < c->size)) {
            free(arena_spare);
            arena_spare = c;
        } else {
            free(c);
        }
    }
    if (arena_head)
        arena_head->used = m.used;
}

ProtobufCAllocator *ipc_frame_allocator(void) { return arena_depth > 0 ? &arena_allocator : NULL; }

struct ipc_conn {
    struct event_base *base;
    struct bufferevent *bev;
    char *name;
    uint32_t max_frame;
    ipc_frame_cb on_frame;
    ipc_close_cb on_close;
    void *arg;
    void *user;
    ipc_conn_free_cb free_hook;
    void *free_hook_arg;
    struct event *flush_timer;
    size_t read_lowmark; /* current read low watermark */
    int depth;           /* owner callbacks currently on the stack */
    bool dead;           /* closed: freed as soon as depth is 0 */
    bool frame_arena;    /* decode into the frame arena (ipc_conn_use_frame_arena) */
    bool flushing;       /* close_after_flush in progress: reading stopped */
};

static void ignore_sigpipe_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

/* Release everything. Only called with depth 0 and dead set. */
static void conn_destroy(ipc_conn_t *c)
{
    if (c->free_hook) {
        ipc_conn_free_cb hook = c->free_hook;
        c->free_hook = NULL;
        c->depth++;
        hook(c, c->free_hook_arg);
        c->depth--;
    }
    if (c->flush_timer)
        event_free(c->flush_timer);
    bufferevent_free(c->bev);
    free(c->name);
    free(c);
}

/* Mark closed; free now unless a callback of ours is on the stack. */
static void conn_release(ipc_conn_t *c)
{
    if (c->dead)
        return;
    c->dead = true;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->depth == 0)
        conn_destroy(c);
}

/* Close with a reason: the owner hears it through on_close, then it is freed. */
static void conn_fail(ipc_conn_t *c, const char *reason)
{
    if (c->dead)
        return;
    c->dead = true;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->on_close) {
        c->depth++;
        c->on_close(c, reason, c->arg);
        c->depth--;
    }
    if (c->depth == 0)
        conn_destroy(c);
}

static void conn_violation(ipc_conn_t *c, const char *reason)
{
    log_warn("ipc: %s: protocol violation, closing the connection: %s", c->name, reason);
    conn_fail(c, reason);
}

static void set_read_lowmark(ipc_conn_t *c, size_t need)
{
    if (c->read_lowmark != need) {
        c->read_lowmark = need;
        bufferevent_setwatermark(c->bev, EV_READ, need, 0);
    }
}

/* Deliver every whole frame in the input buffer. Stops at the first partial
 * frame, at a violation, or when a callback closed the connection. */
static void conn_process_input(ipc_conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->dead && !c->flushing) {
        size_t have = evbuffer_get_length(in);
        if (have < IPC_HEADER_SIZE) {
            set_read_lowmark(c, IPC_HEADER_SIZE);
            return;
        }
        uint8_t hb[IPC_HEADER_SIZE];
        char why[160];
        ipc_header_t h;
        if (evbuffer_copyout(in, hb, sizeof hb) != (ev_ssize_t)sizeof hb) {
            conn_fail(c, "cannot read the input buffer");
            return;
        }
        if (ipc_header_decode(hb, c->max_frame, &h, why, sizeof why) < 0) {
            conn_violation(c, why);
            return;
        }
        size_t need = IPC_HEADER_SIZE + (size_t)h.length;
        if (have < need) {
            set_read_lowmark(c, need);
            return;
        }
        evbuffer_drain(in, IPC_HEADER_SIZE);
        static const uint8_t empty[1];
        const uint8_t *payload = h.length ? evbuffer_pullup(in, (ev_ssize_t)h.length) : empty;
        if (!payload) {
            snprintf(why, sizeof why, "out of memory assembling a frame of %u bytes", h.length);
            log_error("ipc: %s: %s", c->name, why);
            conn_fail(c, why);
            return;
        }
        bool arena = c->frame_arena;
        arena_mark_t mark = arena_mark();
        Lodestar__Envelope *env = lodestar__envelope__unpack(arena ? &arena_allocator : NULL, h.length, payload);
        evbuffer_drain(in, h.length);
        if (!env) {
            if (arena)
                arena_release(mark);
            snprintf(why, sizeof why, "cannot decode the Envelope of a %u-byte frame (header type %u, %s)",
                     h.length, h.type, ipc_type_name(h.type));
            conn_violation(c, why);
            return;
        }
        if (arena)
            arena_depth++;
        if (c->on_frame)
            c->on_frame(c, &h, env, c->arg);
        if (arena) {
            arena_depth--;
            arena_release(mark);
        } else {
            lodestar__envelope__free_unpacked(env, NULL);
        }
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    ipc_conn_t *c = arg;
    c->depth++;
    conn_process_input(c);
    if (--c->depth == 0 && c->dead)
        conn_destroy(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    ipc_conn_t *c = arg;
    if (c->dead)
        return;
    if (c->flushing) {
        /* Closing anyway; the owner already let go of this connection. */
        if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
            conn_release(c);
        return;
    }
    char why[160];
    if (what & BEV_EVENT_EOF) {
        size_t left = evbuffer_get_length(bufferevent_get_input(bev));
        if (left)
            snprintf(why, sizeof why, "peer closed mid-frame (%zu bytes of an incomplete frame discarded)", left);
        else
            snprintf(why, sizeof why, "peer closed");
    } else if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        snprintf(why, sizeof why, "%s error: %s", (what & BEV_EVENT_WRITING) ? "write" : "read",
                 strerror(err));
    } else {
        return;
    }
    log_debug("ipc: %s: connection closed: %s", c->name, why);
    conn_fail(c, why);
}

/* Output drained while closing after flush. */
static void conn_flushed_cb(struct bufferevent *bev, void *arg)
{
    ipc_conn_t *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_release(c);
}

static void conn_flush_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    ipc_conn_t *c = arg;
    log_debug("ipc: %s: %zu bytes still unsent after %d ms, closing anyway", c->name, ipc_conn_pending(c),
              CONN_FLUSH_TIMEOUT_MS);
    conn_release(c);
}

void ipc_conn_use_frame_arena(ipc_conn_t *c)
{
    if (c)
        c->frame_arena = true;
}

ipc_conn_t *ipc_conn_new(struct event_base *base, int fd, const char *name, uint32_t max_frame,
                         ipc_frame_cb on_frame, ipc_close_cb on_close, void *arg)
{
    ignore_sigpipe_once();
    ipc_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    c->name = strdup(name && *name ? name : "ipc peer");
    if (!c->name)
        goto fail;
    if (evutil_make_socket_nonblocking(fd) < 0)
        goto fail;
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev)
        goto fail;
    c->base = base;
    c->max_frame = max_frame ? max_frame : IPC_DEFAULT_MAX_FRAME;
    c->on_frame = on_frame;
    c->on_close = on_close;
    c->arg = arg;
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    set_read_lowmark(c, IPC_HEADER_SIZE);
    if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0) {
        bufferevent_free(c->bev); /* closes fd */
        free(c->name);
        free(c);
        log_error("ipc: %s: cannot watch the connection's socket", name ? name : "ipc peer");
        return NULL;
    }
    return c;

fail:
    log_error("ipc: %s: cannot set up a connection on fd %d: %s", name ? name : "ipc peer", fd, strerror(errno));
    if (c) {
        free(c->name);
        free(c);
    }
    close(fd);
    return NULL;
}

int ipc_conn_send(ipc_conn_t *c, uint8_t kind, uint64_t request_id, const Lodestar__Envelope *env)
{
    if (!c || !env || c->dead || c->flushing)
        return -1;
    uint8_t *buf;
    size_t len;
    if (ipc_frame_encode(kind, request_id, env, c->max_frame, &buf, &len) < 0) {
        log_warn("ipc: %s: cannot send a %s frame (kind %u): %zu bytes exceed the maximum of %u or out of memory",
                 c->name, ipc_type_name(env->body_case), kind, lodestar__envelope__get_packed_size(env),
                 c->max_frame);
        return -1;
    }
    int rc = bufferevent_write(c->bev, buf, len);
    free(buf);
    return rc < 0 ? -1 : 0;
}

size_t ipc_conn_pending(const ipc_conn_t *c)
{
    return evbuffer_get_length(bufferevent_get_output(((ipc_conn_t *)c)->bev));
}

const char *ipc_conn_name(const ipc_conn_t *c)
{
    return c->name;
}

void ipc_conn_set_user(ipc_conn_t *c, void *user)
{
    c->user = user;
}

void *ipc_conn_user(const ipc_conn_t *c)
{
    return c->user;
}

void ipc_conn_set_free_hook(ipc_conn_t *c, ipc_conn_free_cb hook, void *arg)
{
    c->free_hook = hook;
    c->free_hook_arg = arg;
}

void ipc_conn_free(ipc_conn_t *c)
{
    if (c)
        conn_release(c);
}

void ipc_conn_close_after_flush(ipc_conn_t *c)
{
    if (!c || c->dead || c->flushing)
        return;
    c->flushing = true;
    bufferevent_disable(c->bev, EV_READ);
    if (ipc_conn_pending(c) == 0) {
        conn_release(c);
        return;
    }
    /* The default write low watermark is 0: the write callback runs once
     * the output buffer is empty. */
    bufferevent_setcb(c->bev, NULL, conn_flushed_cb, conn_event_cb, c);
    c->flush_timer = evtimer_new(c->base, conn_flush_timeout_cb, c);
    struct timeval tv = {CONN_FLUSH_TIMEOUT_MS / 1000, (CONN_FLUSH_TIMEOUT_MS % 1000) * 1000};
    if (!c->flush_timer || evtimer_add(c->flush_timer, &tv) < 0)
        conn_release(c);
}
