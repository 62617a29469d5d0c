"""qsub -I on a real pty: the user's shell runs in the job's container, on a terminal."""

from __future__ import annotations

import os
import signal

import pytest

from tests.harness import torque
from tests.harness.qsub_terminal import QsubTerminal

pytestmark = [pytest.mark.docker, pytest.mark.torque]


def test_an_interactive_job_gets_a_login_shell_in_its_container(cbatch, tq_user):
    term = QsubTerminal(torque.BIN / "qsub", tq_user.pw_name, {"PATH": "/usr/bin:/bin"})
    try:
        job_id = term.expect(rb"qsub: job (\S+) ready").group(1).decode()
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
