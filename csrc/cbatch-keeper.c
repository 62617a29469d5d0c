/*
 * cbatch-keeper: pid 1 of every job's container.
 *
 *   cbatch-keeper [-s] EXIT_FIFO COMMAND [ARG]...
 *
 * Runs COMMAND (the job's shell behind its prologue) as its child, with default signal
 * dispositions and an empty signal mask, reaps every process the container orphans, and
 * when the job's shell ends writes the shell's raw wait status as one decimal line to
 * EXIT_FIFO (preceded by "E <errno>" when COMMAND could not be executed), which cbatchd
 * reads on the host. Then it lets go of the container's stdout and stderr and stays alive:
 * its children's CPU times (cutime/cstime) now hold everything the job used, and pbs_mom
 * counts them when it samples the adopted container once more as the starter exits.
 * pbs_mom then kills it, or cbatchd removes the container.
 *
 * With -s (the job's output is streamed through Docker's attach, which ends only with the
 * container), the keeper itself carries the job's stdout and stderr: the job writes into
 * pipes the keeper copies to the container's, and when the shell has ended the keeper
 * ends what the job left running (as pbs_mom ends the rest of a job's session natively),
 * copies what is left, and reports the bytes it copied ("O <stdout> <stderr>") before the
 * status, so cbatchd knows when it has all of it while the container lives on.
 *
 * Signals: one sent from outside the container (pbs_mom, cbatchd, `docker kill`: the
 * sender's pid reads as 0 here) is passed on to the job's shell, as docker-init would;
 * one sent from inside (the job's own processes) is ignored. When the status cannot be
 * handed over (no reader: a restarting daemon), the keeper exits with the job's status,
 * so the container's own exit code carries it. A safety limit ends the hold after KEEP_S.
 * Statically linked: it runs in any image, whatever C library the image has or lacks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEEP_S 600

static volatile pid_t child = 0;
static int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
static unsigned long long copied[2];

static void pass_on(int sig, siginfo_t *info, void *context) {
    (void)context;
    if (info != NULL && info->si_pid == 0 && child > 0) /* from outside the container */
        kill(child, sig);
}

static int container_status(int status) {
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* In the child: the job's shell gets the terminal's foreground, as under docker-init. */
static void take_terminal(void) {
    if (!isatty(STDIN_FILENO))
        return;
    signal(SIGTTOU, SIG_IGN);
    if (setpgid(0, 0) == 0)
        tcsetpgrp(STDIN_FILENO, getpid());
}

static void default_signals(void) {
    sigset_t none;
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL); /* fails harmlessly for KILL, STOP and the reserved ones */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void let_go_of_output(void) {
    int null = open("/dev/null", O_RDWR);
    if (null < 0)
        return;
    for (int fd = 0; fd <= 2; fd++)
        if (fd != null)
            dup2(null, fd);
    if (null > 2)
        close(null);
}

/* Copy what one of the job's pipes holds to fd (1 or 2); 0 at its end (no writers). */
static int copy_some(int from, int fd) {
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    for (ssize_t done = 0; done < n;) {
        ssize_t w = write(fd, buf + done, (size_t)(n - done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return n > 0; /* nobody reads the container's output: drop it, keep reading */
        done += w;
    }
    copied[fd - 1] += (unsigned long long)n;
    return n > 0;
}

/* -s: carry the job's output until its shell has ended and nothing holds the pipes. */
static int carry_output(void) {
    int status = 0, shell_done = 0, open_ends = 2;
    struct pollfd ends[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    while (open_ends > 0 || !shell_done) {
        int ready = open_ends > 0 ? poll(ends, 2, 100) : (usleep(50000), 0);
        for (int i = 0; ready > 0 && i < 2; i++)
            if (ends[i].fd >= 0 && ends[i].revents && !copy_some(ends[i].fd, i + 1)) {
                close(ends[i].fd);
                ends[i].fd = -1;
                open_ends--;
            }
        int reaped;
        pid_t pid;
        while ((pid = waitpid(-1, &reaped, WNOHANG)) > 0)
            if (pid == child && !shell_done) {
                status = reaped;
                shell_done = 1;
                if (getpid() == 1) /* only as a container's init: kill(-1) spares it */
                    kill(-1, SIGKILL); /* what the job left running */
            }
    }
    return status;
}

/* Reap orphans until the limit; the job's times stay in this process's cutime/cstime. */
static void hold(void) {
    time_t until = time(NULL) + KEEP_S;
    while (time(NULL) < until) {
        int ignored;
        if (waitpid(-1, &ignored, 0) < 0 && errno == ECHILD) {
            struct timespec second = {1, 0};
            nanosleep(&second, NULL);
        }
    }
}

int main(int argc, char **argv) {
    int carry = argc > 1 && strcmp(argv[1], "-s") == 0;
    argv += carry;
    argc -= carry;
    if (argc < 3) {
        fprintf(stderr, "usage: cbatch-keeper [-s] EXIT_FIFO COMMAND [ARG]...\n");
        return 125;
    }
    int fifo = open(argv[1], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (carry && (pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0)) {
        fprintf(stderr, "cbatch-keeper: cannot make the job's output pipes: %s\n",
                strerror(errno));
        return 125;
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = pass_on;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&action.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGCHLD)
            sigaction(sig, &action, NULL); /* fails harmlessly for KILL and STOP */
    child = fork();
    if (child < 0) {
        fprintf(stderr, "cbatch-keeper: cannot fork: %s\n", strerror(errno));
        return 125;
    }
    if (child == 0) {
        if (carry && (dup2(out_pipe[1], 1) < 0 || dup2(err_pipe[1], 2) < 0))
            _exit(125);
        take_terminal();
        default_signals();
        execvp(argv[2], argv + 2);
        int err = errno;
        if (fifo >= 0)
            dprintf(fifo, "E %d\n", err); /* told before the status: no race with stderr */
        fprintf(stderr, "cbatch-keeper: exec %s failed: %s\n", argv[2], strerror(err));
        _exit(127);
    }
    int status = 0;
    if (carry) {
        close(out_pipe[1]);
        close(err_pipe[1]);
        status = carry_output();
    }
    for (; !carry;) {
        int reaped;
        pid_t pid = waitpid(-1, &reaped, 0);
        if (pid == child) {
            status = reaped;
            break;
        }
        if (pid < 0 && errno != EINTR) {
            fprintf(stderr, "cbatch-keeper: lost the job: %s\n", strerror(errno));
            return 125;
        }
    }
    child = 0;
    if (fifo < 0)
        return container_status(status);
    char line[96];
    int len = carry ? snprintf(line, sizeof line, "O %llu %llu\n%d\n", copied[0], copied[1], status)
                    : snprintf(line, sizeof line, "%d\n", status);
    if (write(fifo, line, (size_t)len) != len)
        return container_status(status);
    let_go_of_output();
    hold();
    return container_status(status);
}
