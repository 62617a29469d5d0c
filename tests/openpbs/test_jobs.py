"""What an OpenPBS job owner sees when cbatch's hook runs the job in a container is what
OpenPBS records for the same job run natively: qstat -fx Exit_status, the accounting
log's E record, the delivered output files. Each test runs the job both ways."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from cbatch.errors import EXIT_REFUSED
from tests.harness import openpbs

pytestmark = [pytest.mark.docker]

IN_IMAGE = "grep -q '^ID=openpbs-tier' /etc/os-release && echo in-image\n"


def in_container(node, job: openpbs.Job) -> None:
    openpbs.wait_for(lambda: node.events("container_started", job_id=job.id), 20,
                     f"job {job.id}'s container")


def started(node, job: openpbs.Job, contained: bool) -> None:
    """Wait until the job runs (in its container, when contained) and has set its traps."""
    openpbs.wait_for(lambda: job.status().get("job_state") == "R", 60, "the job to run")
    if contained:  # the mom signals the adopted container as it signals a native job
        openpbs.wait_for(lambda: node.events("job_adopted", job_id=job.id), 20,
                         f"job {job.id}'s container to be adopted")
    openpbs.wait_for(lambda: job.output_now("o").startswith("ready"), 30,
                     "the job to be ready")


# OpenPBS's mom signals a session's processes children first, one by one: a login shell
# whose child died of the signal just before its own turn may say so on .e
SHELL_REPORT = re.compile(r"^(-bash: line \d+: +\d+ .*|Terminated)\n", re.M)


def errors(job: openpbs.Job) -> str:
    """The .e file without the login shell's report of its child's signal."""
    return SHELL_REPORT.sub("", job.output("e").replace(job.id, "ID"))


def recorded(job: openpbs.Job, timeout: float = 90) -> tuple[int, str]:
    """(qstat -fx Exit_status, the accounting E record's Exit_status)."""
    status = job.wait(timeout)["Exit_status"]
    return status, openpbs.wait_for(lambda: openpbs.accounting(job.id).get("Exit_status"),
                                    20, "the E record")


def test_exit_status_and_output_as_natively(native, submit, node):
    script = "#!/bin/bash\necho out; echo err >&2; exit 3\n"
    plain, job = native(script), submit("#!/bin/bash\n" + IN_IMAGE + script[12:])
    assert recorded(job) == recorded(plain) == (3, "3")
    assert job.output("o") == "in-image\n" + plain.output("o") == "in-image\nout\n"
    assert job.output("e") == plain.output("e") == "err\n"


def comparable(job: openpbs.Job, text: str) -> tuple[list[str], list[str]]:
    """A job's output without what differs by nature from run to run or image to host:
    its id and cookie, PATH (the image's /etc/profile sets it) and the socket the hook
    names for the starter. (lines before "--env--", the environment's lines sorted)"""
    head, _, env = text.replace(job.id, "ID").partition("--env--\n")
    skip = ("PATH=", "PBS_JOBCOOKIE=", "CBATCH_SOCKET=", "_=")
    return head.splitlines(), sorted(v for v in env.splitlines() if not v.startswith(skip))


def test_login_shell_and_environment_as_natively(native, submit, node):
    script = ("#!/bin/bash\necho \"$0\" $-; shopt login_shell; trap -p PIPE; umask; pwd\n"
              "[ -t 0 ] || echo stdin-not-a-tty; id -un; id -Gn; cat $PBS_NODEFILE\n"
              "ls -ld $TMPDIR | { read mode _ owner _; echo $mode $owner; }\n"
              "echo --env--; env\n")
    plain, job = native(script, "-l", "ncpus=1"), submit(script, "-l", "ncpus=1")
    assert recorded(job) == recorded(plain) == (0, "0")
    in_container(node, job)
    ours, theirs = comparable(job, job.output("o")), comparable(plain, plain.output("o"))
    assert ours == theirs
    assert ours[0][0] == "/var/spool/pbs/mom_priv/jobs/ID.SC hB"  # bash runs the .SC
    assert "PBS_ENVIRONMENT=PBS_BATCH" in ours[1] and "NCPUS=1" in ours[1]
    assert job.output("e") == plain.output("e") == ""


def test_qsub_dash_dash_runs_the_command_as_natively(native, submit, node):
    argv = ("--", "/bin/sh", "-c", "printf '[%s]' \"$0\" \"$@\"; [ -t 0 ] || "
            "read line || echo ' stdin-empty'; exit 4", "sh0", "a b", "c")
    plain, job = native(None, *argv), submit(None, *argv)
    assert recorded(job) == recorded(plain) == (4, "4")
    in_container(node, job)
    assert job.output("o") == plain.output("o") == "[sh0][a b][c] stdin-empty\n"


def test_a_refused_image_is_one_cbatch_line_and_the_refused_status(submit):
    job = submit("#CBATCH image=nosuch\necho never\n")
    assert recorded(job) == (EXIT_REFUSED, str(EXIT_REFUSED))
    assert job.output("o") == ""
    err = job.output("e")
    assert err.startswith("cbatch: ") and "nosuch" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("script", [
    "trap 'echo got TERM; exit 143' TERM\necho ready\nsleep 300 & wait\n",  # its own code
    "echo ready\nsleep 300\n",  # the shell dies of pbs_mom's TERM
])
def test_qdel_as_natively(native, submit, node, script):
    results = []
    for run, contained in ((native, False), (submit, True)):
        job = run("#!/bin/bash\n" + script)
        started(node, job, contained)
        openpbs.run(f"{openpbs.PBS_EXEC}/bin/qdel", job.id, user=job.user)
        results.append((recorded(job), job.output("o"), errors(job)))
    assert results[1] == results[0]
    openpbs.wait_for(lambda: node.events("container_removed", job_id=job.id), 20,
                     "the container's removal")


def test_qsig_usr1_ends_the_job_of_the_signal_or_as_its_shell_reports_it(native, submit,
                                                                        node):
    """The mom signals an attached container's processes children first: a login shell
    that outlives its child by a moment ends 128+N (138) instead of dying of the signal
    (266), and may say so on .e (README, Limits). Everything else is as natively."""
    results = []
    for run, contained in ((native, False), (submit, True)):
        job = run("#!/bin/bash\necho ready\nsleep 300\n")
        started(node, job, contained)
        openpbs.run(f"{openpbs.PBS_EXEC}/bin/qsig", "-s", "SIGUSR1", job.id, user=job.user)
        results.append((recorded(job), job.output("o")))
    (native_status, native_out), (status, out) = results
    assert native_status == (266, "266")
    assert status in ((266, "266"), (138, "138")) and out == native_out == "ready\n"
    openpbs.wait_for(lambda: node.events("container_removed", job_id=job.id), 20,
                     "the container's removal")


@pytest.mark.parametrize("signame, script", [
    ("SIGINT", "trap 'echo got INT; exit 4' INT\necho ready\nsleep 300 & wait\n"),
    ("SIGTERM", "trap 'echo got TERM' TERM\necho ready\nsleep 3 & wait; wait; echo end\n"),
])
def test_qsig_as_natively(native, submit, node, signame, script):
    results = []
    for run, contained in ((native, False), (submit, True)):
        job = run("#!/bin/bash\n" + script)
        started(node, job, contained)
        openpbs.run(f"{openpbs.PBS_EXEC}/bin/qsig", "-s", signame, job.id, user=job.user)
        results.append((recorded(job), job.output("o"), errors(job)))
    assert results[1] == results[0]


def test_walltime_kill_as_natively(native, submit, node):
    results = []
    for run in (native, submit):
        job = run("#!/bin/bash\necho ready\nsleep 300\n", "-l", "walltime=00:00:03")
        results.append((recorded(job, timeout=240), job.output("o"), errors(job)))
    assert results[1] == results[0]
    assert "walltime" in results[0][2]
    openpbs.wait_for(lambda: node.events("container_removed", job_id=job.id), 20,
                     "the container's removal")


def test_array_subjobs_as_natively(native, submit, node):
    script = "#PBS -J 1-2\necho index $PBS_ARRAY_INDEX; exit $PBS_ARRAY_INDEX\n"
    for run in (native, submit):
        job = run(script)
        for index in (1, 2):
            sub = openpbs.Job(job.id.replace("[]", f"[{index}]"), job.user)
            assert recorded(sub) == (index, str(index))
            assert sub.output("o") == f"index {index}\n"
            if run is submit:
                in_container(node, sub)


def test_pbsdsh_tasks_run_in_the_jobs_image_as_natively(native, submit, node):
    script = ("#!/bin/bash\n#PBS -l select=1:ncpus=2:mpiprocs=2\n"
              "/opt/pbs/bin/pbsdsh -- /bin/sh -c 'grep -h ^ID= /etc/os-release; "
              "echo task $PBS_TASKNUM; exit 5'; echo pbsdsh $?\n")
    plain, job = native(script), submit(script)
    assert recorded(job) == recorded(plain) == (0, "0")
    # the attached container is a task of the job too: task ids are not compared
    theirs = re.sub(r"task 0+\d+", "task N", plain.output("o"))
    ours = re.sub(r"task 0+\d+", "task N", job.output("o"))
    assert sorted(ours.splitlines()) == sorted(
        theirs.replace("ID=debian", "ID=openpbs-tier").splitlines()), (ours, theirs)
    assert ours.count("ID=openpbs-tier") == 2
    openpbs.wait_for(lambda: len(node.events("container_started", job_id=job.id)) == 3, 20,
                     "a container for the job and one per task")


def test_qsub_interactive_on_a_pty_as_natively(node, workdir):
    """qsub -I: a login shell on the job's terminal (the container's own through cbatch)."""
    results = []
    for on in (False, True):
        node.hook.use(on)
        term = openpbs.Terminal(node.user)
        try:
            job_id = term.expect(rb"qsub: job (\S+) ready").group(1).decode()
            term.type("PS1='$((6*7))> '; echo st''arted\n")
            term.expect(rb"started")
            term.type("echo $0 $PBS_ENVIRONMENT $PBS_JOBID; grep -h ^ID= /etc/os-release; "
                      "[ -t 0 ] && echo on-a-tty; exit 3\n")
            term.expect(rb"-bash PBS_INTERACTIVE " + job_id.encode())
            term.expect(rb"on-a-tty")
            qsub_status = term.close()
        except BaseException:
            os.kill(term.pid, signal.SIGKILL)
            raise
        job = openpbs.Job(job_id, node.user)
        image = b"ID=openpbs-tier" in term.seen
        results.append((recorded(job), qsub_status, image))
        if on:
            finished = openpbs.wait_for(lambda: node.events("job_finished", job_id=job_id),
                                        20, "the job's end")
            assert finished[0]["exit_status"] == 3
    assert results[0][:2] == results[1][:2]
    assert (results[0][2], results[1][2]) == (False, True)
