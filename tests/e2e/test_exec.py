"""`cbatch exec`: a job's owner (or an admin) runs commands inside the job's container."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import time

import pytest

from cbatch.harness.localnode import installed
from tests.e2e.conftest import GROUP, USER
from tests.harness import users

pytestmark = [pytest.mark.docker, pytest.mark.harness]
OTHER, OTHER_GROUP = f"{USER}x", f"{GROUP}x"
PROBE = 'echo "seen: $(pwd) $(id -u):$(id -g) $(id -G) $PBS_JOBID $HOME"'
JOB = f"#!/bin/bash\n{PROBE}\nsleep 120\n"


@pytest.fixture(scope="module")
def other_user():
    entry = users.create(OTHER, OTHER_GROUP)
    yield entry
    users.remove(OTHER, OTHER_GROUP)


@pytest.fixture
def running(daemon, submit):
    """A job whose container runs (and prints PROBE's line as the job itself sees it)."""
    job = submit(JOB)
    daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    yield job
    if job.proc.poll() is None:
        job.proc.kill()


def cbatch_exec(daemon, user: str | None, job_id: str, *command: str,
                stdin: str = "") -> subprocess.CompletedProcess:
    argv = [installed("cbatch"), "--config", str(daemon.config_path), "exec", job_id, *command]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd="/",
                          timeout=60)


def _job_line(job) -> str:
    """What the job printed about itself, read from its output file while it runs."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = job.paths["out"].read_text() if job.paths["out"].exists() else ""
        if text.startswith("seen: "):
            return text.splitlines()[0]
        time.sleep(0.1)
    raise AssertionError("the job printed nothing")


def test_owner_runs_a_command_as_the_job_with_its_groups_env_and_folder(daemon, running,
                                                                        test_user):
    job_id = running.spec.job_id
    result = cbatch_exec(daemon, USER, job_id, "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [_job_line(running)]
    assert f" {test_user.pw_uid}:{test_user.pw_gid} " in result.stdout
    assert str(os.getgrouplist(USER, test_user.pw_gid)[-1]) in result.stdout.split()
    record = daemon.wait_for_event("exec_started", job_id=job_id)
    assert (record["caller_uid"], record["user"], record["uid"]) == (
        test_user.pw_uid, USER, test_user.pw_uid)
    assert len(record["container_id"]) == 12


def test_exit_status_stdin_and_stderr_pass_through(daemon, running):
    job_id = running.spec.job_id.split(".")[0]  # the short id a user types
    result = cbatch_exec(daemon, USER, job_id, "bash", "-c",
                         'read -r l; echo "${l^^}"; cat; echo oops >&2; exit 7',
                         stdin="from the pipe\nrest\n")  # cat ends only at end of input
    assert (result.returncode, result.stdout, result.stderr) == (
        7, "FROM THE PIPE\nrest\n", "oops\n")
    record = daemon.wait_for_event("exec_finished", job_id=running.spec.job_id, exit_status=7)
    assert record["duration_s"] >= 0


def test_another_user_is_refused_and_the_refusal_logged(daemon, running, other_user):
    job_id = running.spec.job_id
    result = cbatch_exec(daemon, OTHER, job_id, "id")
    assert result.returncode == 126 and result.stdout == ""
    assert result.stderr == (f"cbatch: job {job_id} is not yours: only its owner and this "
                             "node's admins may run commands in it\n")
    record = daemon.wait_for_event("exec_refused", job_id=job_id, caller_uid=other_user.pw_uid)
    assert record["error"] == "ExecRefused" and len(record["container_id"]) == 12
    assert not [r for r in daemon.events("exec_started") if r["caller_uid"] == other_user.pw_uid]


def test_root_may_exec_and_runs_as_the_job_user(daemon, running, test_user):
    result = cbatch_exec(daemon, None, running.spec.job_id, "id", "-u")
    assert (result.returncode, result.stdout) == (0, f"{test_user.pw_uid}\n"), result.stderr
    assert daemon.wait_for_event("exec_started", job_id=running.spec.job_id, caller_uid=0)


def test_a_job_that_is_not_running_here_is_named(daemon, test_user):
    result = cbatch_exec(daemon, USER, "99999.nowhere", "true")
    assert result.returncode == 126
    assert result.stderr == ("cbatch: no running job 99999.nowhere on this node; `qstat -n "
                             "99999.nowhere` names the nodes it runs on\n")
    daemon.wait_for_event("exec_refused", job_id="99999.nowhere", caller_uid=test_user.pw_uid)


def test_on_a_terminal_the_command_gets_one_of_the_window_size(daemon, running):
    argv = ["runuser", "-u", USER, "--", installed("cbatch"), "--config",
            str(daemon.config_path), "exec", running.spec.job_id, "sh", "-c",
            "tty; stty size; read line; echo got $line; exit 3"]
    pid, master = pty.fork()
    if pid == 0:
        os.chdir("/")
        os.execvp(argv[0], argv)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("4H", 33, 101, 0, 0))
    out, typed = b"", False
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its terminal
            break
        if not chunk:
            break
        out += chunk
        if not typed and b"33 101" in out:
            os.write(master, b"hello\r")
            typed = True
    _, status = os.waitpid(pid, 0)
    os.close(master)
    text = out.decode(errors="replace")
    assert "/dev/pts/" in text and "33 101" in text and "got hello" in text, text
    assert os.waitstatus_to_exitcode(status) == 3
