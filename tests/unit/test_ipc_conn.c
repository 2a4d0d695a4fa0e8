/*
 * test_ipc_conn.c: framed connections (ipc/conn.c) over real socketpairs
 * and a real event loop: reassembly of partial and coalesced frames,
 * protocol violations, peer loss, isolation between connections, and the
 * ways an owner may close a connection. Every loop is bounded by a deadline.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ipc.h"
#include "log.h"

#define MAX_SEEN 8

typedef struct sink {
    int frames;
    ipc_header_t hdr[MAX_SEEN];
    int body[MAX_SEEN];
    char from[MAX_SEEN][64];
    int closes;
    char reason[256];
    bool free_on_frame;         /* ipc_conn_free from inside on_frame */
    bool close_after_flush_on_frame;
} sink_t;

static struct event_base *base;

static void setup(void)
{
    log_init("test_ipc_conn", LOG_LVL_DEBUG, NULL);
    base = event_base_new();
    cr_assert_not_null(base, "event_base_new");
}

static void teardown(void)
{
    event_base_free(base);
}

TestSuite(ipc_conn, .init = setup, .fini = teardown, .timeout = 20);

static void on_frame(ipc_conn_t *c, const ipc_header_t *h, Lodestar__Envelope *env, void *arg)
{
    sink_t *s = arg;
    if (s->frames < MAX_SEEN) {
        s->hdr[s->frames] = *h;
        s->body[s->frames] = env->body_case;
        if (env->body_case == LODESTAR__ENVELOPE__BODY_PING_REQUEST)
            snprintf(s->from[s->frames], sizeof s->from[0], "%s", env->ping_request->from);
    }
    s->frames++;
    if (s->free_on_frame)
        ipc_conn_free(c);
    if (s->close_after_flush_on_frame)
        ipc_conn_close_after_flush(c);
}

static void on_close(ipc_conn_t *c, const char *reason, void *arg)
{
    sink_t *s = arg;
    s->closes++;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Run the loop until *counter reaches want, or ms pass. Returns the count. */
static int run_until(int *counter, int want, int ms)
{
    bool expired = false;
    struct event *t = evtimer_new(base, deadline_cb, &expired);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (*counter < want && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return *counter;
}

/* Let the loop handle whatever is ready now, a few rounds. */
static void run_ready(void)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static void make_pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0, "socketpair: %s", strerror(errno));
}

static size_t ping_frame(uint64_t id, const char *from, uint8_t **out)
{
    Lodestar__PingRequest pr = LODESTAR__PING_REQUEST__INIT;
    pr.from = (char *)from;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_PING_REQUEST;
    env.ping_request = &pr;
    size_t len = 0;
    cr_assert_eq(ipc_frame_encode(IPC_KIND_REQUEST, id, &env, 0, out, &len), 0, "encode ping");
    return len;
}

static void write_all(int fd, const void *buf, size_t len)
{
    cr_assert_eq(write(fd, buf, len), (ssize_t)len, "write %zu bytes: %s", len, strerror(errno));
}

/* Read from a blocking fd with a deadline; returns bytes read, 0 on EOF. */
static ssize_t read_some(int fd, void *buf, size_t len, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return -1;
    return read(fd, buf, len);
}

/* The raw peer sees EOF: our side really closed the socket. */
static void expect_peer_eof(int fd)
{
    char b[64];
    ssize_t n;
    while ((n = read_some(fd, b, sizeof b, 2000)) > 0)
        ;
    cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "peer should see the connection closed (got %zd)", n);
}

Test(ipc_conn, frame_written_one_byte_at_a_time_arrives_once)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "byte peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    uint8_t *f;
    size_t len = ping_frame(5, "trickle", &f);
    for (size_t i = 0; i < len; i++) {
        write_all(sv[1], f + i, 1);
        if (i + 1 < len) {
            run_ready();
            cr_assert_eq(s.frames, 0, "no frame before its last byte (after byte %zu of %zu)", i + 1, len);
        }
    }
    free(f);
    cr_assert_eq(run_until(&s.frames, 1, 2000), 1, "the frame arrives");
    run_ready();
    cr_assert_eq(s.frames, 1, "exactly once");
    cr_assert_eq(s.hdr[0].request_id, 5u, "request id");
    cr_assert_eq(s.hdr[0].kind, IPC_KIND_REQUEST, "kind");
    cr_assert_eq(s.body[0], LODESTAR__ENVELOPE__BODY_PING_REQUEST, "body");
    cr_assert_str_eq(s.from[0], "trickle", "payload intact");
    cr_assert_eq(s.closes, 0, "still open");
    ipc_conn_free(c);
    close(sv[1]);
}

Test(ipc_conn, two_frames_in_one_write_arrive_in_order)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "pair peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    uint8_t *a, *b;
    size_t la = ping_frame(1, "first", &a);
    size_t lb = ping_frame(2, "second", &b);
    uint8_t *both = malloc(la + lb);
    memcpy(both, a, la);
    memcpy(both + la, b, lb);
    write_all(sv[1], both, la + lb);
    free(a);
    free(b);
    free(both);

    cr_assert_eq(run_until(&s.frames, 2, 2000), 2, "both frames arrive");
    cr_assert_eq(s.hdr[0].request_id, 1u, "first in order");
    cr_assert_str_eq(s.from[0], "first", "first payload");
    cr_assert_eq(s.hdr[1].request_id, 2u, "second in order");
    cr_assert_str_eq(s.from[1], "second", "second payload");
    cr_assert_eq(s.closes, 0, "still open");
    ipc_conn_free(c);
    close(sv[1]);
}

Test(ipc_conn, oversized_frame_closes_with_size_and_maximum)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "greedy peer", 1024, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    ipc_header_t h = {.version = IPC_VERSION, .kind = IPC_KIND_REQUEST, .type = 100, .length = 4096,
                      .request_id = 1};
    uint8_t hb[IPC_HEADER_SIZE];
    ipc_header_encode(&h, hb);
    write_all(sv[1], hb, sizeof hb);

    cr_assert_eq(run_until(&s.closes, 1, 2000), 1, "closed");
    cr_assert_eq(s.frames, 0, "no frame delivered");
    cr_assert(strstr(s.reason, "4096") && strstr(s.reason, "1024"), "reason names size and maximum: '%s'",
              s.reason);
    expect_peer_eof(sv[1]);
    close(sv[1]);
}

Test(ipc_conn, garbage_closes_with_bad_magic)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "http peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    const char *junk = "GET / HTTP/1.1\r\nHost: lodestar\r\n\r\n";
    write_all(sv[1], junk, strlen(junk));
    cr_assert_eq(run_until(&s.closes, 1, 2000), 1, "closed");
    cr_assert_eq(s.frames, 0, "no frame delivered");
    cr_assert(strncmp(s.reason, "bad magic", 9) == 0, "reason: '%s'", s.reason);
    expect_peer_eof(sv[1]);
    close(sv[1]);
}

Test(ipc_conn, undecodable_envelope_closes_with_decode_reason)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "broken peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    /* field 1 (error), length-delimited, claims 5 bytes but carries 1 */
    const uint8_t payload[] = {0x0a, 0x05, 0x01};
    ipc_header_t h = {.version = IPC_VERSION, .kind = IPC_KIND_REQUEST, .type = 1, .length = sizeof payload,
                      .request_id = 3};
    uint8_t f[IPC_HEADER_SIZE + sizeof payload];
    ipc_header_encode(&h, f);
    memcpy(f + IPC_HEADER_SIZE, payload, sizeof payload);
    write_all(sv[1], f, sizeof f);

    cr_assert_eq(run_until(&s.closes, 1, 2000), 1, "closed");
    cr_assert_eq(s.frames, 0, "no frame delivered");
    cr_assert(strstr(s.reason, "decode") != NULL, "reason mentions decoding: '%s'", s.reason);
    expect_peer_eof(sv[1]);
    close(sv[1]);
}

Test(ipc_conn, peer_dying_mid_frame_gives_peer_closed_and_no_frame)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "dying peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    uint8_t *f;
    size_t len = ping_frame(9, "half of me", &f);
    write_all(sv[1], f, len / 2 + 1);
    free(f);
    run_ready();
    close(sv[1]);

    cr_assert_eq(run_until(&s.closes, 1, 2000), 1, "closed");
    cr_assert_eq(s.frames, 0, "no frame delivered");
    cr_assert(strncmp(s.reason, "peer closed", 11) == 0, "reason: '%s'", s.reason);
}

Test(ipc_conn, clean_peer_close_says_peer_closed)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "polite peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");
    close(sv[1]);
    cr_assert_eq(run_until(&s.closes, 1, 2000), 1, "closed");
    cr_assert_str_eq(s.reason, "peer closed", "reason");
}

Test(ipc_conn, violation_on_one_connection_leaves_another_alone)
{
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    sink_t sa = {0}, sb = {0};
    ipc_conn_t *ca = ipc_conn_new(base, a[0], "bad neighbour", 0, on_frame, on_close, &sa);
    ipc_conn_t *cb = ipc_conn_new(base, b[0], "good neighbour", 0, on_frame, on_close, &sb);
    cr_assert(ca && cb, "ipc_conn_new");

    uint8_t *f;
    size_t len = ping_frame(11, "still here", &f);
    static const char junk[] = "\xde\xad\xbe\xef garbage garbage garbage";
    write_all(a[1], junk, sizeof junk - 1);
    write_all(b[1], f, len);

    cr_assert_eq(run_until(&sa.closes, 1, 2000), 1, "bad connection closed");
    cr_assert_eq(run_until(&sb.frames, 1, 2000), 1, "good connection got its frame");
    cr_assert_str_eq(sb.from[0], "still here", "payload");

    /* The good one still works both ways. */
    write_all(b[1], f, len);
    cr_assert_eq(run_until(&sb.frames, 2, 2000), 2, "second frame on the good connection");
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    cr_assert_eq(ipc_conn_send(cb, IPC_KIND_PUSH, 0, &env), 0, "send on the good connection");
    run_until(&sb.closes, 1, 100);
    uint8_t hb[IPC_HEADER_SIZE];
    cr_assert_eq(read_some(b[1], hb, sizeof hb, 2000), (ssize_t)IPC_HEADER_SIZE, "peer reads our frame");
    ipc_header_t h;
    char err[128] = "";
    cr_assert_eq(ipc_header_decode(hb, 0, &h, err, sizeof err), 0, "our header is valid: %s", err);
    cr_assert_eq(h.kind, IPC_KIND_PUSH, "kind");
    cr_assert_eq(sb.closes, 0, "good connection never closed");
    free(f);
    ipc_conn_free(cb);
    close(a[1]);
    close(b[1]);
}

Test(ipc_conn, freeing_inside_on_frame_stops_delivery_safely)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {.free_on_frame = true};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "freed peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    uint8_t *a, *b;
    size_t la = ping_frame(1, "one", &a);
    size_t lb = ping_frame(2, "two", &b);
    write_all(sv[1], a, la);
    write_all(sv[1], b, lb);
    free(a);
    free(b);
    cr_assert_eq(run_until(&s.frames, 1, 2000), 1, "first frame");
    run_ready();
    cr_assert_eq(s.frames, 1, "nothing after the owner freed the connection");
    cr_assert_eq(s.closes, 0, "ipc_conn_free does not call on_close");
    expect_peer_eof(sv[1]);
    close(sv[1]);
}

Test(ipc_conn, send_then_close_after_flush_delivers_everything)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {.close_after_flush_on_frame = true};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "flushing peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    /* A 100 KB reply: more than one socket buffer's worth, so it cannot
     * all be written before close_after_flush is called. */
    size_t big = 100 * 1024;
    char *detail = malloc(big + 1);
    memset(detail, 'd', big);
    detail[big] = '\0';
    Lodestar__Ready r = LODESTAR__READY__INIT;
    r.detail = detail;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_READY;
    env.ready = &r;
    cr_assert_eq(ipc_conn_send(c, IPC_KIND_PUSH, 0, &env), 0, "queue a big frame");
    size_t want = IPC_HEADER_SIZE + lodestar__envelope__get_packed_size(&env);
    free(detail);

    uint8_t *f;
    size_t len = ping_frame(1, "bye", &f);
    write_all(sv[1], f, len);
    free(f);
    cr_assert_eq(run_until(&s.frames, 1, 2000), 1, "frame that triggers the close");
    cr_assert_eq(ipc_conn_send(c, IPC_KIND_PUSH, 0, &env), -1, "no sends once closing");

    /* Drain the peer side while the loop flushes. */
    size_t got = 0;
    char buf[65536];
    bool eof = false;
    for (int i = 0; i < 2000 && !eof; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        struct pollfd p = {.fd = sv[1], .events = POLLIN};
        if (poll(&p, 1, 5) == 1) {
            ssize_t n = read(sv[1], buf, sizeof buf);
            if (n > 0)
                got += (size_t)n;
            else
                eof = true;
        }
    }
    cr_assert(eof, "peer sees EOF after the flush");
    cr_assert_eq(got, want, "every queued byte arrived before the close (%zu of %zu)", got, want);
    cr_assert_eq(s.closes, 0, "close_after_flush does not call on_close");
    close(sv[1]);
}

Test(ipc_conn, close_after_flush_gives_up_after_a_second)
{
    int sv[2];
    make_pair(sv);
    sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "stuck peer", 0, on_frame, on_close, &s);
    cr_assert_not_null(c, "ipc_conn_new");

    /* Fill the socket so the output can never drain: nobody reads sv[1]. */
    size_t big = 4 * 1024 * 1024;
    char *detail = malloc(big + 1);
    memset(detail, 'x', big);
    detail[big] = '\0';
    Lodestar__Ready r = LODESTAR__READY__INIT;
    r.detail = detail;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_READY;
    env.ready = &r;
    cr_assert_eq(ipc_conn_send(c, IPC_KIND_PUSH, 0, &env), 0, "queue 4 MB");
    free(detail);
    run_ready();
    cr_assert_gt(ipc_conn_pending(c), 0u, "output is stuck");
    ipc_conn_close_after_flush(c);

    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    /* The close shows up as EOF at the peer once we stop waiting; poll
     * only for hangup, since the pending data is never read. */
    bool hup = false;
    for (int i = 0; i < 400 && !hup; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        struct pollfd p = {.fd = sv[1], .events = POLLRDHUP};
        if (poll(&p, 1, 10) == 1 && (p.revents & (POLLRDHUP | POLLHUP)))
            hup = true;
    }
    gettimeofday(&t1, NULL);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
    cr_assert(hup, "connection closed after the flush timeout");
    cr_assert(ms >= 900 && ms < 3000, "closed after about 1 s (took %ld ms)", ms);
    cr_assert_eq(s.closes, 0, "no on_close");
    close(sv[1]);
}

/* Frames decoded into the frame arena: small and large ones (beyond a
 * chunk) arrive intact, the nested-decode allocator exists only inside the
 * callback, and many frames in a row reuse the arena without growing. */
typedef struct arena_sink {
    int frames;
    size_t sizes[4];
    bool bytes_ok;
    bool allocator_inside;
} arena_sink_t;

static void on_arena_frame(ipc_conn_t *c, const ipc_header_t *h, Lodestar__Envelope *env, void *arg)
{
    arena_sink_t *s = arg;
    ProtobufCAllocator *al = ipc_frame_allocator();
    s->allocator_inside = al != NULL;
    if (env->body_case == LODESTAR__ENVELOPE__BODY_EVENT) {
        const Lodestar__Event *ev = env->event;
        bool ok = true;
        for (size_t i = 0; i < ev->data.len; i++)
            ok = ok && ev->data.data[i] == (uint8_t)(i * 7u + ev->seq);
        /* a nested decode into the same arena: the data is itself an Event */
        if (al && ev->data.len == 0) {
            void *p = al->alloc(al->allocator_data, 100000);
            ok = ok && p != NULL;
            if (p)
                memset(p, 0xab, 100000);
        }
        s->bytes_ok = (s->frames == 0 || s->bytes_ok) && ok;
        if (s->frames < 4)
            s->sizes[s->frames] = ev->data.len;
    }
    s->frames++;
}

static size_t event_frame(uint64_t seq, size_t n, uint8_t **out)
{
    uint8_t *data = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7u + seq);
    Lodestar__Event ev = LODESTAR__EVENT__INIT;
    ev.topic = "t";
    ev.seq = seq;
    ev.data.data = data;
    ev.data.len = n;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_EVENT;
    env.event = &ev;
    size_t len = 0;
    cr_assert_eq(ipc_frame_encode(IPC_KIND_PUSH, 0, &env, 0, out, &len), 0, "encode event");
    free(data);
    return len;
}

Test(ipc_conn, frame_arena_decodes_small_large_and_nested)
{
    int sv[2];
    make_pair(sv);
    arena_sink_t s = {0};
    ipc_conn_t *c = ipc_conn_new(base, sv[0], "arena peer", 8u << 20, on_arena_frame, on_close, &s);
    cr_assert_not_null(c);
    ipc_conn_use_frame_arena(c);
    cr_assert_null(ipc_frame_allocator(), "no frame allocator outside a callback");
    size_t sizes[4] = {10, 150000, 0, 70000}; /* 150000: beyond one arena chunk, within a socket buffer */
    for (int i = 0; i < 4; i++) {
        uint8_t *f = NULL;
        size_t len = event_frame((uint64_t)i + 1, sizes[i], &f);
        write_all(sv[1], f, len);
        free(f);
        cr_assert_eq(run_until(&s.frames, i + 1, 3000), i + 1, "frame %d delivered", i);
    }
    for (int i = 0; i < 4; i++)
        cr_assert_eq(s.sizes[i], sizes[i], "frame %d: %zu bytes of data, expected %zu", i, s.sizes[i], sizes[i]);
    cr_assert(s.bytes_ok, "every byte of every frame intact");
    cr_assert(s.allocator_inside, "the frame allocator exists inside the callback");
    cr_assert_null(ipc_frame_allocator(), "and not after it");
    /* many frames: the arena is reused (ASan would see a leak or misuse) */
    for (int i = 0; i < 200; i++) {
        uint8_t *f = NULL;
        size_t len = event_frame((uint64_t)i, 5000, &f);
        write_all(sv[1], f, len);
        free(f);
        if (i % 20 == 19)
            cr_assert_eq(run_until(&s.frames, 4 + i + 1, 3000), 4 + i + 1, "frames up to %d delivered", i);
    }
    cr_assert(s.bytes_ok);
    ipc_conn_free(c);
    close(sv[1]);
}
