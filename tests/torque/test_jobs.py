"""Jobs through a real pbs_mom and cbatch: what Torque records is what it records natively
(torque-contract.md and its addendum give the native facts)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.harness import torque

pytestmark = [pytest.mark.docker, pytest.mark.torque]
IN_IMAGE = "grep -h ^ID= /etc/os-release\n"  # the image's, not the host's


def test_exit_status_and_output_as_natively(cbatch, submit):
    job = submit("#!/bin/bash\n" + IN_IMAGE + "id -un; echo to-err >&2; exit 3\n")
    assert job.exit_status() == 3
    out = job.output("o")
    assert out.splitlines() == ["ID=torque-tier", job.user.pw_name]
    assert job.output("e") == "to-err\n"
    assert job.accounting()["Exit_status"] == "3"
    record = cbatch.wait_for_event("job_finished", job_id=job.job_id)
    assert record["image"] == "torque-tier" and record["container_id"]


def test_join_keep_arguments_and_working_directory(cbatch, submit, tq_user):
    work = os.path.join(tq_user.pw_dir, "work-dir")
    os.makedirs(work, exist_ok=True)
    os.chown(work, tq_user.pw_uid, tq_user.pw_gid)
    joined = submit("#!/bin/bash\necho out; echo err >&2\n", "-j", "oe")
    kept = submit("#!/bin/bash\necho kept-out; echo kept-err >&2\n", "-k", "oe")
    script = os.path.join(tq_user.pw_dir, "args.sh")
    with open(script, "w") as f:
        f.write("#!/bin/bash\necho \"n=$# 1=$1 2=$2 pwd=$(pwd)\"\n")
    os.chown(script, tq_user.pw_uid, tq_user.pw_gid)
    args = submit(None, "-F", 'a1 "b 2"', "-d", work, script)
    assert joined.exit_status() == 0 and kept.exit_status() == 0 and args.exit_status() == 0
    assert joined.output("o").splitlines() == ["out", "err"]
    assert not os.path.exists(joined.info()["Error_Path"].split(":", 1)[1])
    assert kept.output("o") == "kept-out\n" and kept.output("e") == "kept-err\n"
    assert args.output("o") == f"n=2 1=a1 2=b 2 pwd={work}\n"  # delivered to -d's folder


def test_array_job_runs_every_index_in_its_container(cbatch, submit):
    job = submit("#!/bin/bash\n" + IN_IMAGE + "echo index=$PBS_ARRAYID\nexit $PBS_ARRAYID\n",
                 "-t", "1-3")
    base = job.job_id.replace("[]", "")
    for index in (1, 2, 3):
        sub = torque.Job(base.replace(".", f"[{index}].", 1), job.user)
        assert sub.exit_status() == index
        assert sub.output("o").splitlines() == ["ID=torque-tier", f"index={index}"]


def test_qdel_is_271_and_leaves_no_container(cbatch, submit, tq_api):
    job = submit("#!/bin/bash\necho started\nsleep 300\n")
    job.wait_state("R")
    cbatch.wait_for_event("container_started", job_id=job.job_id)
    torque.qdel(job.job_id)
    assert job.exit_status() == 271
    torque.wait_for(lambda: not torque.containers(tq_api, job.job_id), 20,
                    "the job's container to be removed")


def test_walltime_kill_is_recorded_as_natively(cbatch, submit, tq_api):
    job = submit("#!/bin/bash\nsleep 300\n", "-l", "walltime=00:00:03")
    assert job.exit_status(timeout=3 + 3 * torque.CHECK_POLL_S + 30) == -11
    assert "=>> PBS: job killed: walltime" in job.output("e")
    torque.wait_for(lambda: not torque.containers(tq_api, job.job_id), 20,
                    "the job's container to be removed")


@pytest.mark.parametrize("signame, script, expected", [
    ("SIGUSR1", "sleep 300", 266),  # the top shell dies of it, as natively
    ("SIGINT", "trap 'echo got-INT; exit 4' INT; sleep 300 & wait", 4),  # bash waits: own code
])
def test_qsig_as_natively(cbatch, submit, signame, script, expected):
    job = submit(f"#!/bin/bash\necho ready\n{script}\n")
    job.wait_state("R")
    cbatch.wait_for_event("container_started", job_id=job.job_id)
    time.sleep(1)  # the trap is set
    torque.qsig(job.job_id, signame)
    assert job.exit_status() == expected


def test_suspend_stops_the_job_and_resume_continues_it(cbatch, submit):
    job = submit("#!/bin/bash\nfor i in {1..8}; do echo $i; sleep 1; done\n")
    job.wait_state("R")
    cbatch.wait_for_event("container_started", job_id=job.job_id)
    torque.qsig(job.job_id, "suspend")  # TSTP, 5 s, STOP (qsig waits those 5 s)
    job.wait_state("S", timeout=30)
    time.sleep(10)  # natively: no progress while suspended
    torque.qsig(job.job_id, "resume")
    info = job.wait(timeout=60)
    assert info["exit_status"] == "0"
    assert job.output("o").split() == [str(i) for i in range(1, 9)]
    walltime = torque.parse_duration(info["resources_used.walltime"])
    assert walltime < 8 + 8  # the suspended time is left out, as natively


def test_twenty_jobs_at_once_and_jobs_that_end_within_milliseconds(cbatch, submit):
    jobs = [submit(f"#!/bin/bash\necho job-{i}\n") for i in range(20)]
    for i, job in enumerate(jobs):
        assert job.exit_status(timeout=240) == 0
        assert job.output("o") == f"job-{i}\n"
    assert cbatch.alive()
    assert not cbatch.events("internal_error")


def test_daemon_alive_after_a_hundred_jobs_that_end_at_once(cbatch, submit):
    """Each is adopted with pbs_track as the job's uid; pbs_mom kills what it adopted at
    the job's end, which must never be the daemon's session (it once was)."""
    mark = time.time()
    jobs = [submit("#!/bin/sh\ntrue\n") for _ in range(100)]
    for job in jobs:
        assert job.exit_status(timeout=600) == 0
    assert cbatch.alive()
    log = torque.mom_log_since(mark)
    assert f"sid = {cbatch.proc.pid}" not in log and f"pid {cbatch.proc.pid} " not in log
    adopted = [r for r in cbatch.events("job_adopted") if r["job_id"] in
               {j.job_id for j in jobs}]
    assert len(adopted) == 100, cbatch.events("adopt_failed")[-3:]


def test_a_starter_killed_by_hand_leaves_no_container(cbatch, submit, tq_api):
    job = submit("#!/bin/bash\nsleep 300\n")
    job.wait_state("R")
    record = cbatch.wait_for_event("container_started", job_id=job.job_id)
    starter = int(job.info()["session_id"])
    os.kill(starter, signal.SIGKILL)
    assert job.exit_status() == 256 + signal.SIGKILL
    torque.wait_for(lambda: not torque.containers(tq_api, job.job_id), 20,
                    f"container {record['container_id']} to be removed")
