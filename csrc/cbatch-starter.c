/*
 * cbatch-starter: Torque's $job_starter, what pbs_mom runs as the job.
 *
 *   cbatch-starter SHELL [ARG]...      (stdin: pbs_mom's "<path>.SC [args]" line)
 *
 * It asks cbatchd to run the job in its container, copies the job's streamed output to its
 * own fds 1 and 2, relays the signals pbs_mom sends, and ends as the job ended: the same
 * exit status, or death by the signal the daemon names (so Torque records 256+N). For an
 * interactive job (qsub -I: fd 0 is the job's terminal) it puts that terminal in raw mode
 * and carries keystrokes and window sizes to the container's own terminal. It never runs
 * the job itself: without the daemon, the job does not run.
 *
 * Why C, statically linked: pbs_mom execs the starter as the job's owner with the job's
 * own environment (qsub -v). An interpreter would run their code on the host, outside any
 * container, before every job (PYTHONPATH, PYTHONHOME, usercustomize), and a dynamically
 * linked program loads their LD_PRELOAD, LD_AUDIT and LD_LIBRARY_PATH libraries. A static
 * executable has no loader to steer. This one reads only CBATCH_SOCKET and
 * CBATCH_RECONNECT_S from its environment, makes no NSS, locale or gettext call
 * (strerrordesc_np, not strerror), and allocates nothing: every buffer is static and bounded.
 *
 * Wire format: cbatch/protocol.py. A frame is a u32 header length and a u32 payload length
 * (big endian), a JSON header object whose "t" names the kind, and a raw payload; the job's
 * fds 1 and 2 ride along the request as SCM_RIGHTS. Exit statuses: cbatch/errors.py.
 * Signal handlers only record (a byte on a pipe); the poll loop relays.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define EXIT_NODE_FAILURE 125 /* cbatch could not run the job on this node: requeue-able */
#define EXIT_REFUSED 126      /* the request was refused: the job's owner must change it */
#define PROTOCOL_VERSION 1
#define DEFAULT_SOCKET "/run/cbatch/cbatchd.sock"
#define MAX_HEADER (256 * 1024) /* protocol.MAX_HEADER */
#define MAX_PAYLOAD (1024 * 1024) /* protocol.MAX_PAYLOAD */
#define MAX_STDIN (64 * 1024)
#define STDIN_TIMEOUT_MS 30000
#define RECONNECT_S 120.0 /* how long a running job waits for a restarting cbatchd */
#define MAX_DEPTH 16      /* nesting the parser follows in values it skips */

/* The signals pbs_mom sends a job (protocol.RELAYED_SIGNALS). */
static const int relayed[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGTSTP, SIGCONT};

static char stdin_data[MAX_STDIN + 1];
static size_t stdin_len;
static char request[MAX_HEADER];      /* the request's JSON header */
static char header[MAX_HEADER];       /* a daemon frame's header */
static char payload[MAX_PAYLOAD];     /* and its payload */
static char message[MAX_HEADER + 64]; /* decoded from a header, or formatted here */
static char line[MAX_HEADER + 80];    /* "cbatch: <message>\n" */
static char keys[4096];               /* typed, not yet delivered: kept across a reconnect */
static size_t keys_len;
static int wake[2] = {-1, -1}; /* signal numbers, one byte each, from handler to loop */
static struct termios cooked;
static int terminal_raw;

static const char *describe(int err) {
    const char *text = strerrordesc_np(err);
    return text ? text : "unknown error";
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) { /* someone made the fd non-blocking */
            struct pollfd ready = {fd, POLLOUT, 0};
            poll(&ready, 1, -1);
        } else if (n < 0 && errno == EPIPE) {
            return 0; /* the reader went away; the job's output has nowhere to go */
        } else if (n == 0) {
            errno = EIO;
            return -1;
        } else if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

/* Every end: terminal restored, at most one "cbatch:" line, the job's status or signal. */
__attribute__((noreturn)) static void finish(long long status, long long signum,
                                             const char *text, size_t len) {
    if (terminal_raw)
        tcsetattr(0, TCSADRAIN, &cooked); /* fails only when the terminal is gone */
    if (len > 0) {
        size_t n = 8;
        memcpy(line, "cbatch: ", n);
        for (size_t i = 0; i < len && n < sizeof line - 1; i++) /* one line, whatever it says */
            line[n++] = ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) ? ' ' : text[i];
        line[n++] = '\n';
        write_all(2, line, n);
    }
    if (signum > 0 && signum < NSIG) { /* the job died of a signal pbs_mom sent: die of it */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigset_t only;
        sigaction((int)signum, &dfl, NULL); /* fails harmlessly for KILL, STOP, libc's own */
        sigemptyset(&only);
        sigaddset(&only, (int)signum);
        sigprocmask(SIG_UNBLOCK, &only, NULL);
        kill(getpid(), (int)signum);
    }
    _exit((int)((unsigned long long)status & 0xFF));
}

__attribute__((noreturn, format(printf, 2, 3))) static void fail(int status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int len = vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    finish(status, 0, message, len < 0 ? 0 : (size_t)len < sizeof message ? (size_t)len : sizeof message - 1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static volatile sig_atomic_t received[NSIG]; /* signals pbs_mom sent this starter */

static void on_signal(int signum) {
    int saved = errno;
    if (signum > 0 && signum < NSIG)
        received[signum] = 1;
    unsigned char byte = (unsigned char)signum;
    ssize_t ignored = write(wake[1], &byte, 1); /* a full pipe drops it */
    (void)ignored;
    errno = saved;
}

/* What pbs_mom wrote on stdin (the script line), up to EOF. */
static void read_stdin(void) {
    for (;;) {
        struct pollfd ready = {0, POLLIN, 0}; /* regular files and /dev/null: always ready */
        int got = poll(&ready, 1, STDIN_TIMEOUT_MS);
        if (got < 0 && errno == EINTR)
            continue;
        if (got == 0)
            fail(EXIT_NODE_FAILURE, "the job's stdin was not closed by pbs_mom; the job did not run");
        ssize_t n = read(0, stdin_data + stdin_len, sizeof stdin_data - stdin_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the end, or stdin closed or unreadable: nothing more to pass on */
        stdin_len += (size_t)n;
        if (stdin_len > MAX_STDIN)
            fail(EXIT_REFUSED, "the job's stdin is larger than cbatch accepts (%d bytes)", MAX_STDIN);
    }
}

/* A socket to root's cbatchd, or -1 (or, when fatal, the end with the reason). */
static int connect_daemon(int fatal) {
    const char *path = getenv("CBATCH_SOCKET");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int err = ENAMETOOLONG;
    if (!path)
        path = DEFAULT_SOCKET;
    size_t len = strlen(path);
    if (len < sizeof addr.sun_path) {
        memcpy(addr.sun_path, path, len + 1);
        int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        err = errno;
        if (sock >= 0) {
            int rc;
            while ((rc = connect(sock, (struct sockaddr *)&addr,
                                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1))) < 0
                   && errno == EINTR)
                ;
            err = errno;
            if (rc == 0) {
                struct ucred peer;
                socklen_t size = sizeof peer;
                if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &size) == 0 && peer.uid == 0)
                    return sock;
                close(sock); /* only root's cbatchd may run jobs: never a daemon a user started */
                if (fatal)
                    fail(EXIT_NODE_FAILURE, "the daemon on %s is not run by root; the job did not run", path);
                return -1;
            }
            close(sock);
        }
    }
    if (fatal) {
        struct utsname node;
        if (uname(&node) < 0)
            strcpy(node.nodename, "this node");
        fail(EXIT_NODE_FAILURE, "cannot reach cbatchd on %s (%s); the job did not run; "
             "it can be requeued, or tell your admin", node.nodename, describe(err));
    }
    return -1;
}

/* Length of the well-formed UTF-8 sequence at s, its code point in *cp; 0 if ill-formed. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    size_t len;
    uint32_t c, least;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xE0) == 0xC0)
        len = 2, least = 0x80, c = s[0] & 0x1F;
    else if ((s[0] & 0xF0) == 0xE0)
        len = 3, least = 0x800, c = s[0] & 0x0F;
    else if ((s[0] & 0xF8) == 0xF0)
        len = 4, least = 0x10000, c = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    if (c < least || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000))
        return 0;
    *cp = c;
    return len;
}

/* JSON's two-character escapes: the letter after the backslash, and what it stands for. */
static const char escape_letters[] = "\"\\/bfnrt";
static const char escaped_chars[] = "\"\\/\b\f\n\r\t";

/* The request's JSON, written as Python's json.dumps writes it (ASCII only). */
static size_t json_len;
static int json_full;

static void put(const char *s, size_t n) {
    if (n > sizeof request - json_len) {
        json_full = 1;
        return;
    }
    memcpy(request + json_len, s, n);
    json_len += n;
}

static void put_text(const char *s) { put(s, strlen(s)); }

/* An argument as the daemon's os.fsdecode would see it: bytes that are not UTF-8 become
 * the lone surrogates U+DC80..U+DCFF (Python's surrogateescape). */
static void put_string(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    char esc[16];
    put("\"", 1);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_next(u + i, n - i, &cp);
        if (len == 0)
            cp = 0xDC00 + u[i], len = 1;
        i += len;
        const char *named = cp && cp < 0x80 ? strchr(escaped_chars, (int)cp) : NULL;
        if (named && cp != '/') { /* json.dumps leaves '/' alone */
            esc[0] = '\\', esc[1] = escape_letters[named - escaped_chars];
            put(esc, 2);
        } else if (cp >= 0x20 && cp < 0x7F) {
            esc[0] = (char)cp;
            put(esc, 1);
        } else if (cp < 0x10000) {
            put(esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp));
        } else {
            cp -= 0x10000;
            put(esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x\\u%04x",
                                      (unsigned)(0xD800 + (cp >> 10)), (unsigned)(0xDC00 + (cp & 0x3FF))));
        }
    }
    put("\"", 1);
}

/* [rows, cols] of the job's terminal, or null when it has none or an unset (0x0) size. */
static const char *winsize(int tty) {
    static char text[32];
    struct winsize size;
    if (!tty || ioctl(0, TIOCGWINSZ, &size) < 0 || !size.ws_row || !size.ws_col)
        return "null";
    snprintf(text, sizeof text, "[%u,%u]", size.ws_row, size.ws_col);
    return text;
}

static size_t build_request(char **argv, int tty, int resume) {
    json_len = 0;
    json_full = 0;
    put_text("{\"t\":\"request\",\"v\":1,\"argv\":[");
    for (int i = 0; argv[i]; i++) {
        if (i > 0)
            put(",", 1);
        put_string(argv[i]);
    }
    put_text(tty ? "],\"tty\":true,\"winsize\":" : "],\"tty\":false,\"winsize\":");
    put_text(winsize(tty));
    put_text(resume ? ",\"resume\":true}" : "}");
    if (json_full)
        fail(EXIT_REFUSED, "the job's command line is larger than cbatch accepts (%d bytes)", MAX_HEADER);
    return json_len;
}

/* One frame; fds, if any, ride along its first byte. 0, or -1 with errno set. */
static int send_frame(int sock, const char *head, size_t head_len, const char *body,
                      size_t body_len, const int *fds, int nfds) {
    unsigned char prefix[8];
    for (int i = 0; i < 4; i++) {
        prefix[i] = (unsigned char)(head_len >> (24 - 8 * i));
        prefix[4 + i] = (unsigned char)(body_len >> (24 - 8 * i));
    }
    struct iovec iov[3] = {{prefix, 8}, {(void *)head, head_len}, {(void *)body, body_len}};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } control;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
    if (nfds > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, (size_t)nfds * sizeof(int));
    }
    for (;;) {
        while (msg.msg_iovlen > 0 && msg.msg_iov->iov_len == 0)
            msg.msg_iov++, msg.msg_iovlen--;
        if (msg.msg_iovlen == 0)
            return 0;
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        msg.msg_control = NULL; /* sent with the first byte */
        msg.msg_controllen = 0;
        for (size_t left = (size_t)n; left > 0;) {
            size_t step = left < msg.msg_iov->iov_len ? left : msg.msg_iov->iov_len;
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + step;
            msg.msg_iov->iov_len -= step;
            left -= step;
            if (msg.msg_iov->iov_len == 0)
                msg.msg_iov++, msg.msg_iovlen--;
        }
    }
}

static int read_exact(int sock, char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = read(sock, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One whole frame into header and payload; -1 when the connection is closed or broken,
 * or the frame is oversized. */
static int recv_frame(int sock, size_t *head_len, size_t *body_len) {
    unsigned char prefix[8];
    if (read_exact(sock, (char *)prefix, sizeof prefix) < 0)
        return -1;
    *head_len = (size_t)prefix[0] << 24 | (size_t)prefix[1] << 16 | (size_t)prefix[2] << 8 | prefix[3];
    *body_len = (size_t)prefix[4] << 24 | (size_t)prefix[5] << 16 | (size_t)prefix[6] << 8 | prefix[7];
    if (*head_len > sizeof header || *body_len > sizeof payload)
        return -1;
    return read_exact(sock, header, *head_len) < 0 || read_exact(sock, payload, *body_len) < 0 ? -1 : 0;
}

/* A strict JSON reader for the daemon's headers: one object of scalars, nested values
 * checked and skipped. Strings decode to UTF-8 (a lone \uD800-\uDFFF becomes U+FFFD). */
enum { J_STRING = 1, J_INT, J_NUMBER, J_LITERAL, J_NESTED };
struct cursor {
    const unsigned char *at, *end;
};
struct scalar {
    int type;
    long long number;   /* J_INT */
    char *text;         /* J_STRING: the first cap bytes; len counts them all */
    size_t cap, len;
};

static void blank(struct cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r'))
        c->at++;
}

static int eat(struct cursor *c, char want) {
    blank(c);
    if (c->at < c->end && *c->at == want) {
        c->at++;
        return 1;
    }
    return 0;
}

static int hex4(struct cursor *c, uint32_t *out) {
    uint32_t v = 0;
    if (c->end - c->at < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        unsigned char h = c->at[i];
        int digit = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                  : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (digit < 0)
            return 0;
        v = v << 4 | (uint32_t)digit;
    }
    c->at += 4;
    *out = v;
    return 1;
}

static void keep(struct scalar *s, const unsigned char *bytes, size_t n) {
    if (s->len + n <= s->cap) /* once one piece does not fit, none after it will */
        memcpy(s->text + s->len, bytes, n);
    s->len += n;
}

static void keep_code_point(struct scalar *s, uint32_t cp) {
    unsigned char b[4];
    if (cp < 0x80)
        b[0] = (unsigned char)cp, keep(s, b, 1);
    else if (cp < 0x800)
        b[0] = (unsigned char)(0xC0 | cp >> 6), b[1] = (unsigned char)(0x80 | (cp & 0x3F)), keep(s, b, 2);
    else if (cp < 0x10000)
        b[0] = (unsigned char)(0xE0 | cp >> 12), b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)),
        b[2] = (unsigned char)(0x80 | (cp & 0x3F)), keep(s, b, 3);
    else
        b[0] = (unsigned char)(0xF0 | cp >> 18), b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F)),
        b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)), b[3] = (unsigned char)(0x80 | (cp & 0x3F)),
        keep(s, b, 4);
}

static int string(struct cursor *c, struct scalar *s) {
    s->type = J_STRING;
    s->len = 0;
    if (!eat(c, '"'))
        return 0;
    for (;;) {
        uint32_t cp, low;
        if (c->at >= c->end || *c->at < 0x20)
            return 0;
        if (*c->at == '"') {
            c->at++;
            return 1;
        }
        if (*c->at != '\\') {
            size_t n = utf8_next(c->at, (size_t)(c->end - c->at), &cp);
            if (n == 0)
                return 0;
            keep(s, c->at, n);
            c->at += n;
            continue;
        }
        if (c->end - c->at < 2)
            return 0;
        const char *letter = c->at[1] ? strchr(escape_letters, c->at[1]) : NULL;
        c->at += 2;
        if (letter) {
            keep_code_point(s, (unsigned char)escaped_chars[letter - escape_letters]);
            continue;
        }
        if (c->at[-1] != 'u' || !hex4(c, &cp))
            return 0;
        if (cp >= 0xD800 && cp < 0xDC00 && c->end - c->at >= 6 && c->at[0] == '\\' && c->at[1] == 'u') {
            struct cursor peek = {c->at + 2, c->end};
            if (hex4(&peek, &low) && low >= 0xDC00 && low < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                c->at = peek.at;
            }
        }
        keep_code_point(s, cp >= 0xD800 && cp < 0xE000 ? 0xFFFD : cp);
    }
}

static int number(struct cursor *c, struct scalar *s) {
    const unsigned char *p = c->at, *end = c->end;
    unsigned long long v = 0;
    int negative = 0, fits = 1;
    s->type = J_NUMBER;
    if (p < end && *p == '-')
        negative = 1, p++;
    if (p >= end || *p < '0' || *p > '9')
        return 0;
    if (*p == '0') {
        p++;
    } else {
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            unsigned digit = *p - '0';
            if (v > ((unsigned long long)LLONG_MAX - digit) / 10)
                fits = 0;
            else
                v = v * 10 + digit;
        }
    }
    int integral = 1;
    if (p < end && *p == '.') {
        integral = 0;
        if (++p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integral = 0;
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    c->at = p;
    if (integral && fits) {
        s->type = J_INT;
        s->number = negative ? -(long long)v : (long long)v;
    }
    return 1;
}

static int value(struct cursor *c, struct scalar *s, int depth);

static int nested(struct cursor *c, int depth) {
    struct scalar skipped = {0};
    char close = *c->at == '{' ? '}' : ']';
    if (depth >= MAX_DEPTH)
        return 0;
    c->at++;
    if (eat(c, close))
        return 1;
    do {
        if (close == '}' && (!string(c, &skipped) || !eat(c, ':')))
            return 0;
        if (!value(c, &skipped, depth + 1))
            return 0;
    } while (eat(c, ','));
    return eat(c, close);
}

static int value(struct cursor *c, struct scalar *s, int depth) {
    static const char *const literals[] = {"true", "false", "null"};
    blank(c);
    if (c->at >= c->end)
        return 0;
    if (*c->at == '"')
        return string(c, s);
    if (*c->at == '{' || *c->at == '[') {
        s->type = J_NESTED;
        return nested(c, depth);
    }
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(literals[i]);
        if ((size_t)(c->end - c->at) >= n && memcmp(c->at, literals[i], n) == 0) {
            s->type = J_LITERAL;
            c->at += n;
            return 1;
        }
    }
    return number(c, s);
}

struct reply {
    struct scalar kind, status, signum, message;
};

/* The daemon's header: 1 when it is one JSON object with a string "t"; last key wins. */
static int parse_reply(size_t len, struct reply *r) {
    static char kind[16], key[16];
    struct cursor c = {(const unsigned char *)header, (const unsigned char *)header + len};
    struct scalar name = {.text = key, .cap = sizeof key}, skipped = {0};
    memset(r, 0, sizeof *r);
    r->kind.text = kind, r->kind.cap = sizeof kind - 1;
    r->message.text = message, r->message.cap = sizeof message;
    if (!eat(&c, '{'))
        return 0;
    if (!eat(&c, '}')) {
        do {
            if (!string(&c, &name) || !eat(&c, ':'))
                return 0;
            struct scalar *into = &skipped;
            if (name.len == 1 && key[0] == 't')
                into = &r->kind;
            else if (name.len == 6 && memcmp(key, "status", 6) == 0)
                into = &r->status;
            else if (name.len == 6 && memcmp(key, "signal", 6) == 0)
                into = &r->signum;
            else if (name.len == 7 && memcmp(key, "message", 7) == 0)
                into = &r->message;
            if (!value(&c, into, 0))
                return 0;
        } while (eat(&c, ','));
        if (!eat(&c, '}'))
            return 0;
    }
    blank(&c);
    if (c.at != c.end || r->kind.type != J_STRING)
        return 0;
    kind[r->kind.len < r->kind.cap ? r->kind.len : 0] = '\0'; /* too long: no kind we know */
    return 1;
}

static int send_keys(int sock) {
    static const char input[] = "{\"t\":\"input\"}";
    if (keys_len == 0)
        return 0;
    if (send_frame(sock, input, sizeof input - 1, keys, keys_len, NULL, 0) < 0)
        return -1;
    keys_len = 0;
    return 0;
}

static void relay_signals(int sock, int tty) {
    unsigned char got[256];
    ssize_t n = read(wake[0], got, sizeof got);
    for (ssize_t i = 0; i < n; i++) {
        char text[64];
        int len = got[i] == SIGWINCH
            ? snprintf(text, sizeof text, "{\"t\":\"resize\",\"winsize\":%s}", winsize(tty))
            : snprintf(text, sizeof text, "{\"t\":\"signal\",\"signal\":%d}", got[i]);
        send_frame(sock, text, (size_t)len, "", 0, NULL, 0); /* a lost daemon shows on the read side */
    }
}

/* Copy output (and keystrokes) and relay signals until the daemon reports the end, which
 * never returns; a return means the connection was lost. */
static void follow(int sock, int tty) {
    int typing = tty;
    if (tty && send_keys(sock) < 0)
        return;
    for (;;) {
        struct pollfd fds[3] = {{sock, POLLIN, 0}, {wake[0], POLLIN, 0},
                                {typing && keys_len < sizeof keys ? 0 : -1, POLLIN, 0}};
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail(EXIT_NODE_FAILURE, "cannot wait for cbatchd (%s); tell your admin", describe(errno));
        }
        if (fds[1].revents)
            relay_signals(sock, tty);
        if (fds[2].revents) {
            ssize_t n = read(0, keys + keys_len, sizeof keys - keys_len);
            if (n > 0)
                keys_len += (size_t)n;
            else if (n == 0 || errno != EINTR)
                typing = 0; /* EIO: the terminal hung up; its SIGHUP is relayed */
            if (send_keys(sock) < 0)
                return;
        }
        if (!fds[0].revents)
            continue;
        size_t head_len, body_len;
        struct reply r;
        if (recv_frame(sock, &head_len, &body_len) < 0 || !parse_reply(head_len, &r))
            return;
        const char *kind = r.kind.text;
        int fd = strcmp(kind, "stdout") == 0 ? 1 : strcmp(kind, "stderr") == 0 ? 2 : 0;
        if (fd && write_all(fd, payload, body_len) < 0)
            fail(EXIT_NODE_FAILURE, "cannot write the job's output to fd %d (%s); the job was ended",
                 fd, describe(errno));
        long long status = r.status.type == J_INT ? r.status.number : EXIT_NODE_FAILURE;
        size_t said = r.message.type == J_STRING ? r.message.len : 0; /* never above its cap */
        long long signum = r.signum.type == J_INT ? r.signum.number : 0;
        /* The job died of a signal this starter was sent too (pbs_mom signals the starter
         * and the adopted container at once, and the container may report first): die of it */
        if (signum == 0 && status > 128 && status - 128 < NSIG && status - 128 != SIGWINCH
                && received[status - 128])
            signum = status - 128;
        if (strcmp(kind, "exit") == 0)
            finish(status, signum, message, said);
        if (strcmp(kind, "error") == 0 && said == 0)
            finish(status, 0, "cbatchd refused the job", strlen("cbatchd refused the job"));
        if (strcmp(kind, "error") == 0)
            finish(status, 0, message, said);
    }
}

/* The daemon restarted under a running job: wait for it and ask to resume. */
static int reconnect(char **argv, int tty) {
    const char *text = getenv("CBATCH_RECONNECT_S");
    double patience = RECONNECT_S;
    if (text) {
        char *end;
        double given = strtod(text, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n')
            end++;
        if (end != text && *end == '\0' && isfinite(given))
            patience = given;
    }
    double deadline = now() + patience;
    for (;;) {
        /* qdel or walltime while no daemon listens: pbs_mom has TERMed the adopted container
         * too, and natively the job's top shell dies of it at once: so does the starter */
        if (received[SIGTERM])
            finish(128 + SIGTERM, SIGTERM, NULL, 0);
        int sock = connect_daemon(0);
        if (sock >= 0) {
            size_t len = build_request(argv, tty, 1);
            if (send_frame(sock, request, len, stdin_data, stdin_len, NULL, 0) == 0)
                return sock;
            close(sock);
        }
        if (now() > deadline)
            fail(EXIT_NODE_FAILURE, "lost the connection to cbatchd while the job ran and it did not "
                 "come back within %.0f s; the job's end is unknown; tell your admin", patience);
        struct timespec pause = {0, 250 * 1000 * 1000};
        while (nanosleep(&pause, &pause) < 0 && errno == EINTR)
            ;
    }
}

/* Keystrokes go to the container's terminal as typed: ^C, ^Z and echo are its business.
 * The same mode as Python's tty.setraw. */
static void raw_terminal(void) {
    struct termios raw;
    if (tcgetattr(0, &cooked) < 0)
        fail(EXIT_NODE_FAILURE, "cannot read the job's terminal mode (%s)", describe(errno));
    raw = cooked;
    raw.c_iflag &= ~(tcflag_t)(BRKINT | ICRNL | INPCK | ISTRIP | IXON);
    raw.c_oflag &= ~(tcflag_t)OPOST;
    raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_lflag &= ~(tcflag_t)(ECHO | ICANON | IEXTEN | ISIG);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    int rc;
    while ((rc = tcsetattr(0, TCSADRAIN, &raw)) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        fail(EXIT_NODE_FAILURE, "cannot put the job's terminal in raw mode (%s)", describe(errno));
    terminal_raw = 1;
}

int main(int argc, char **argv) {
    struct sigaction ignore = {.sa_handler = SIG_IGN}, record = {.sa_handler = on_signal,
                                                                 .sa_flags = SA_RESTART};
    int fds[2] = {1, 2}, closed = 0;
    for (int fd = 0; fd < 3; fd++) /* a closed one gets /dev/null: no socket may land there */
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && open("/dev/null", O_RDWR) == fd)
            closed |= 1 << fd;
    sigaction(SIGPIPE, &ignore, NULL); /* a gone reader is an error return, not a death */
    if (argc < 2)
        fail(EXIT_REFUSED, "cbatch-starter runs as Torque's $job_starter and needs the job's "
             "shell as its argument");
    int tty = isatty(0);
    if (!tty)
        read_stdin();
    if (pipe2(wake, O_NONBLOCK | O_CLOEXEC) < 0)
        fail(EXIT_NODE_FAILURE, "cannot set up the signal relay (%s); the job did not run", describe(errno));
    for (size_t i = 0; i < sizeof relayed / sizeof relayed[0]; i++)
        sigaction(relayed[i], &record, NULL);
    if (tty)
        sigaction(SIGWINCH, &record, NULL);
    int sock = connect_daemon(1);
    size_t len = build_request(argv + 1, tty, 0);
    int nfds = tty || (closed & 6) ? 0 : 2; /* both output files, or none: all is streamed */
    if (send_frame(sock, request, len, stdin_data, stdin_len, fds, nfds) < 0)
        fail(EXIT_NODE_FAILURE, "lost the connection to cbatchd (%s); the job did not run", describe(errno));
    if (tty)
        raw_terminal();
    for (;;) {
        follow(sock, tty);
        close(sock);
        sock = reconnect(argv + 1, tty);
    }
}
