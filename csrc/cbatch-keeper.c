/*
 * cbatch-keeper: pid 1 of every job's container.
 *
 *   cbatch-keeper EXIT_FIFO COMMAND [ARG]...
 *
 * Runs COMMAND (the job's shell behind its prologue) as its child, with default signal
 * dispositions and an empty signal mask, reaps every process the container orphans, and
 * when the job's shell ends writes the shell's raw wait status as one decimal line to
 * EXIT_FIFO (preceded by "E <errno>" when COMMAND could not be executed), which cbatchd
 * reads on the host. Then it lets go of the container's stdout and stderr (so output
 * streamed through Docker ends once the job's own processes are gone) and stays alive:
 * its children's CPU times (cutime/cstime) now hold everything the job used, and pbs_mom
 * counts them when it samples the adopted container once more as the starter exits.
 * pbs_mom then kills it, or cbatchd removes the container.
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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEEP_S 600

static volatile pid_t child = 0;

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
    if (argc < 3) {
        fprintf(stderr, "usage: cbatch-keeper EXIT_FIFO COMMAND [ARG]...\n");
        return 125;
    }
    int fifo = open(argv[1], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
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
    for (;;) {
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
    char line[32];
    int len = snprintf(line, sizeof line, "%d\n", status);
    if (write(fifo, line, (size_t)len) != len)
        return container_status(status);
    let_go_of_output();
    hold();
    return container_status(status);
}
