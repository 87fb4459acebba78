/*
 * minimal-server.c - the least a server speaking plugboard's frame protocol
 * must do, as a floor to measure plugboard against (tools/bench.sh). One
 * thread, epoll, level-triggered. Per readable event: one read, find the
 * frame boundaries from the 2-byte header length and the header's
 * content-length, one write of as many replies. Every request gets the
 * search plugin's answer for "morpheus", pre-encoded; nothing is parsed
 * beyond what finding a frame's end takes.
 *
 * Usage: minimal-server PORT    (listens on 127.0.0.1; not installed)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536
#define MAX_FRAME (1 << 20)

#define REPLY_CONTENT "{\"result\": \"Follow the white rabbit. \xf0\x9f\x90\xb0\"}"

typedef struct conn {
    unsigned char *in;          /* bytes of frames not complete yet */
    size_t in_len, in_cap;
    unsigned char *out;         /* replies the socket did not take yet */
    size_t out_len, out_cap;
    int writing;                /* EPOLLOUT is watched */
} conn;

static unsigned char reply[256];
static size_t reply_len;
static conn *conns;             /* indexed by descriptor */
static int n_conns;
static int epfd;

static void build_reply(void)
{
    int one = 1;
    const char *order = *(const char *)&one ? "little" : "big";
    char header[200];
    int h = snprintf(header, sizeof header,
                     "{\"byteorder\": \"%s\", \"content-type\": \"text/json\", "
                     "\"content-encoding\": \"utf-8\", \"content-length\": %zu}",
                     order, strlen(REPLY_CONTENT));
    reply[0] = (unsigned char)(h >> 8);
    reply[1] = (unsigned char)h;
    memcpy(reply + 2, header, (size_t)h);
    memcpy(reply + 2 + h, REPLY_CONTENT, strlen(REPLY_CONTENT));
    reply_len = 2 + (size_t)h + strlen(REPLY_CONTENT);
}

static int reserve(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    unsigned char *p = realloc(*buf, n);
    if (p == NULL)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static void drop(int fd)
{
    conn *c = &conns[fd];
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof *c);
    close(fd);
}

/* The length of the whole frame at p[0..len), 0 if it is not all there
 * yet, -1 if the header has no readable content-length. */
static long frame_length(const unsigned char *p, size_t len)
{
    if (len < 2)
        return 0;
    size_t h = (size_t)p[0] << 8 | p[1];
    if (h == 0)
        return -1;
    if (len < 2 + h)
        return 0;
    static const char key[] = "\"content-length\"";
    const unsigned char *end = p + 2 + h;
    const unsigned char *k = memmem(p + 2, h, key, sizeof key - 1);
    if (k == NULL)
        return -1;
    k += sizeof key - 1;
    while (k < end && (*k == ' ' || *k == ':'))
        k++;
    long n = 0;
    if (k == end || *k < '0' || *k > '9')
        return -1;
    while (k < end && *k >= '0' && *k <= '9' && n <= MAX_FRAME)
        n = n * 10 + (*k++ - '0');
    if (n > MAX_FRAME)
        return -1;
    return len >= 2 + h + (size_t)n ? (long)(2 + h + (size_t)n) : 0;
}

/* Writes what is pending; watches for writability while some is left. */
static int flush(int fd)
{
    conn *c = &conns[fd];
    ssize_t n = write(fd, c->out, c->out_len);
    if (n < 0 && errno != EAGAIN)
        return -1;
    if (n > 0) {
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    if ((c->out_len != 0) == c->writing)
        return 0;
    c->writing = c->out_len != 0;
    struct epoll_event ev = { .events = EPOLLIN | (c->writing ? EPOLLOUT : 0),
                              .data.fd = fd };
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

static void on_readable(int fd)
{
    conn *c = &conns[fd];
    if (reserve(&c->in, &c->in_cap, c->in_len + READ_SIZE) != 0) {
        drop(fd);
        return;
    }
    ssize_t n = read(fd, c->in + c->in_len, READ_SIZE);
    if (n <= 0) {
        if (n == 0 || errno != EAGAIN)
            drop(fd);
        return;
    }
    c->in_len += (size_t)n;
    size_t used = 0, replies = 0;
    long f;
    while ((f = frame_length(c->in + used, c->in_len - used)) > 0) {
        used += (size_t)f;
        replies++;
    }
    if (f < 0) {
        drop(fd);
        return;
    }
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    if (replies == 0)
        return;
    if (reserve(&c->out, &c->out_cap, c->out_len + replies * reply_len) != 0) {
        drop(fd);
        return;
    }
    for (size_t i = 0; i < replies; i++, c->out_len += reply_len)
        memcpy(c->out + c->out_len, reply, reply_len);
    if (flush(fd) != 0)
        drop(fd);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (fd >= n_conns) {
            int n = n_conns ? n_conns : 1024;
            while (n <= fd)
                n *= 2;
            conn *p = realloc(conns, (size_t)n * sizeof *p);
            if (p == NULL) {
                close(fd);
                continue;
            }
            memset(p + n_conns, 0, (size_t)(n - n_conns) * sizeof *p);
            conns = p;
            n_conns = n;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
            close(fd);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fputs("usage: minimal-server PORT\n", stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    build_reply();
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons((uint16_t)atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(lfd, 511) != 0) {
        perror("minimal-server: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd)
                on_accept(lfd);
            else if (events[i].events & EPOLLOUT) {
                if (flush(fd) != 0)
                    drop(fd);
            } else
                on_readable(fd);
        }
    }
}
