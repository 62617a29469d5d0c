/*
 * cbatch-keeper: the job's parent inside its container (docker-init is pid 1 above it).
 *
 *   cbatch-keeper EXIT_FIFO COMMAND [ARG]...
 *
 * Runs COMMAND as its child with default signal dispositions and an empty signal mask,
 * waits for it, and writes the child's raw wait status as one decimal line to EXIT_FIFO
 * (preceded by "E <errno>" when COMMAND could not be executed),
 * which cbatchd reads on the host. It then stays alive, holding the job's CPU time in its
 * children's times (cutime/cstime), until it is killed: pbs_mom samples an adopted
 * container's processes once more when the starter exits, and this is what it counts.
 *
 * The keeper passes a signal on to the job's shell only when docker-init sent it (a
 * `docker kill`/`docker stop` of the container reaches pid 1, which forwards it here);
 * it ignores signals from the host: cbatchd and pbs_mom signal every process of the job
 * themselves, and the keeper must outlive the job. When the status cannot be handed over (no
 * reader: an older or restarting daemon), it exits with the job's status instead, so the
 * container's own exit code carries it. A safety limit ends the wait after KEEP_S seconds.
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
    if (info != NULL && info->si_pid == 1 && child > 0) /* from docker-init, not the host */
        kill(child, sig);
}

static int container_status(int status) {
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

static void default_signals(void) {
    sigset_t none;
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL); /* fails harmlessly for KILL, STOP and the reserved ones */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
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
        default_signals();
        execvp(argv[2], argv + 2);
        int err = errno;
        if (fifo >= 0)
            dprintf(fifo, "E %d\n", err); /* told before the status: no race with stderr */
        fprintf(stderr, "cbatch-keeper: exec %s failed: %s\n", argv[2], strerror(err));
        _exit(127);
    }
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "cbatch-keeper: lost the job: %s\n", strerror(errno));
            return 125;
        }
    if (fifo < 0)
        return container_status(status);
    char line[32];
    int len = snprintf(line, sizeof line, "%d\n", status);
    if (write(fifo, line, (size_t)len) != len)
        return container_status(status);
    /* Hold the job's times until pbs_mom has counted them and cbatchd ends the container. */
    struct timespec keep = {KEEP_S, 0};
    while (nanosleep(&keep, &keep) < 0 && errno == EINTR)
        ;
    return container_status(status);
}
