"""qsub -I on a real pty: the user's shell runs in the job's container, on a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import time

import pytest

from tests.harness import torque

pytestmark = [pytest.mark.docker, pytest.mark.torque]


class Terminal:
    """qsub -I on a pseudo-terminal, as a user at a login would run it."""

    def __init__(self, user) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(user.pw_dir)
            os.execve("/usr/sbin/runuser", ["runuser", "-u", user.pw_name, "--",
                                             str(torque.BIN / "qsub"), "-I"],
                      {"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "TERM": "xterm"})
        self.seen = b""

    def expect(self, pattern: bytes, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no {pattern!r} on the terminal; it shows {self.seen!r}")
            try:
                self.seen += os.read(self.fd, 4096)
            except OSError:  # EIO: qsub ended
                raise AssertionError(f"qsub ended; the terminal showed {self.seen!r}") from None
        return self.seen

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def close(self) -> int:
        try:
            _, status = os.waitpid(self.pid, 0)
        finally:
            os.close(self.fd)
        return status


def test_an_interactive_job_gets_a_login_shell_in_its_container(cbatch, tq_user):
    term = Terminal(tq_user)
    try:
        term.expect(rb"qsub: job (\S+) ready")
        job_id = re.search(rb"qsub: job (\S+) ready", term.seen).group(1).decode()
        term.type("PS1='$((6*7))> '; echo st''arted\n")
        term.expect(rb"started")
        term.type("grep -h ^ID= /etc/os-release; echo $0 $PBS_ENVIRONMENT; tty; exit 3\n")
        term.expect(rb"ID=torque-tier")
        term.expect(rb"-bash PBS_INTERACTIVE")
        term.expect(rb"/dev/pts/0")  # the container's own terminal
        term.close()
    except BaseException:
        os.kill(term.pid, signal.SIGKILL)
        raise
    job = torque.Job(job_id, tq_user)
    assert job.exit_status() == 265  # natively too: pbs_mom records 265 for qsub -I
    record = cbatch.wait_for_event("job_finished", job_id=job_id)
    assert record["exit_status"] == 3 and record["image"] == "torque-tier"
