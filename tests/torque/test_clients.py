"""Torque's own clients in a job's container: qstat and qsub authenticate to trqauthd
through cbatchd's relay (trqauth.py), whatever pid namespace the container has."""

from __future__ import annotations

import os
import re

import pytest

from tests.harness import torque
from tests.torque.conftest import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.torque]


@pytest.fixture(scope="module")
def with_clients(node, mom, tq_image):
    """A cbatchd that gives containers the node's qsub, qstat and qdel."""
    mom.use(True)
    node.kill()
    daemon = torque.CbatchNode({IMAGE: tq_image}, IMAGE, {
        "container": {"sweep_interval_s": 5},
        "torque": {"clients": [str(torque.BIN / name) for name in ("qsub", "qstat", "qdel")]}})
    daemon.start()
    yield daemon
    daemon.cleanup()
    node.start()


def test_a_job_sees_itself_with_qstat_and_submits_its_successor(with_clients, submit):
    job = submit("#!/bin/bash\n"
                 "grep -h ^ID= /etc/os-release\n"
                 "qstat -f $PBS_JOBID | grep -E '^ *job_state'\n"
                 "echo 'grep -h ^ID= /etc/os-release; id -un' | qsub -N successor\n")
    assert job.exit_status() == 0, job.output("e")
    lines = job.output("o").splitlines()
    assert lines[:2] == ["ID=torque-tier", "    job_state = R"], lines
    successor_id = lines[2]
    assert re.fullmatch(r"[0-9]+\.\S+", successor_id), lines
    successor = torque.Job(successor_id, job.user)
    assert successor.exit_status() == 0
    assert successor.output("o").splitlines() == ["ID=torque-tier", job.user.pw_name]
    assert successor.info()["Job_Owner"].startswith(job.user.pw_name + "@")
    relayed = [r for r in with_clients.events("trqauth_relayed")
               if r["uid"] == job.user.pw_uid]
    assert relayed and all(r["vouched"] for r in relayed)
    started = with_clients.wait_for_event("container_started", job_id=job.job_id)
    assert {r["container_id"] for r in relayed} == {started["container_id"]}


def test_qsub_in_a_job_survives_a_daemon_restart(with_clients, submit):
    """Containers mount the relay's folder, so the restarted daemon's socket is theirs."""
    job = submit("#!/bin/bash\n"
                 "while [ ! -e ~/cbt-restarted ]; do sleep 0.2; done\n"
                 "qstat $PBS_JOBID >/dev/null && echo qstat-ok\n")
    job.wait_state("R")
    with_clients.wait_for_event("container_started", job_id=job.job_id)
    with_clients.kill()
    with_clients.start()
    flag = f"{job.user.pw_dir}/cbt-restarted"
    open(flag, "w").close()
    try:
        assert job.exit_status() == 0, job.output("e")
        assert job.output("o") == "qstat-ok\n"
    finally:
        os.unlink(flag)
