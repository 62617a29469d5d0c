"""Node-side faults on a real Torque node: the daemon killed, Docker unreachable, the node
health check, a job deleted while the daemon is away. No job runs outside a container,
no container outlives its job, and Torque's own requeue and health machinery work."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.harness import dockerproxy, torque

pytestmark = [pytest.mark.docker, pytest.mark.torque]


def test_cbatchd_killed_mid_job_loses_no_output(cbatch, submit):
    job = submit("#!/bin/bash\nfor i in {1..12}; do echo line-$i; sleep 0.5; done\n")
    cbatch.wait_for_event("container_started", job_id=job.job_id)
    time.sleep(1.5)
    cbatch.kill(signal.SIGKILL)
    time.sleep(2)
    cbatch.start()
    assert job.exit_status() == 0
    assert job.output("o").split() == [f"line-{i}" for i in range(1, 13)]
    cbatch.wait_for_event("job_resumed", job_id=job.job_id)


def test_a_job_deleted_while_cbatchd_is_down_leaves_no_container(cbatch, submit, tq_api):
    job = submit("#!/bin/bash\nsleep 300\n")
    cbatch.wait_for_event("job_adopted", job_id=job.job_id)
    cbatch.kill(signal.SIGKILL)
    torque.qdel(job.job_id)
    job.wait(timeout=90)
    # pbs_mom kills the container it adopted with the job, daemon or no daemon
    torque.wait_for(lambda: not [c for c in torque.containers(tq_api, job.job_id)
                                 if c["State"] == "running"], 30,
                    "the job's container to stop without cbatchd")
    cbatch.start()  # and the daemon removes what is left of it
    torque.wait_for(lambda: not torque.containers(tq_api, job.job_id), 30,
                    "the job's container to be removed")


def test_health_check_marks_the_node_down_while_cbatchd_is_down(cbatch):
    cbatch.kill(signal.SIGKILL)
    try:
        torque.wait_for(lambda: torque.node_state() == "down", 60, "the node to be down")
        assert torque.node_message().lower().startswith("error")
    finally:
        cbatch.start()
    torque.wait_for(lambda: torque.node_state() == "free", 60, "the node to be free again")


@pytest.fixture
def requeue_on_125():
    torque.qmgr("set server automatic_requeue_exit_code = 125")
    yield
    torque.qmgr("unset server automatic_requeue_exit_code")


def test_docker_unreachable_ends_125_and_the_job_is_requeued_and_runs_later(
        cbatch, submit, requeue_on_125, tmp_path):
    """Docker going away under cbatchd is played by a proxy in front of its socket that is
    cut (the health check still sees Docker, so the node stays up and the job is retried
    until Docker is back)."""
    os.chmod(tmp_path, 0o755)
    proxy = dockerproxy.DockerProxy(tmp_path / "docker.sock")
    cbatch.kill()
    cbatch.env["DOCKER_HOST"] = proxy.url
    cbatch.start()
    try:
        proxy.cut()
        job = submit("#!/bin/bash\n" "grep -h ^ID= /etc/os-release\n")
        failed = cbatch.wait_for_event("job_failed", job_id=job.job_id, timeout=60)
        assert failed["exit_status"] == 125 and failed["error"] == "EngineUnavailable"
        time.sleep(3)
        assert job.state() in ("Q", "R", "W")  # requeued by the server, not completed
        proxy.restore()
        info = job.wait(timeout=180)
        assert info["exit_status"] == "0"
        finished = cbatch.wait_for_event("job_finished", job_id=job.job_id)
        assert finished["exit_status"] == 0  # the same job, run again by Torque
        assert job.output("o") == "ID=torque-tier\n"  # only the run that ran delivers
    finally:
        proxy.restore()
        cbatch.kill()
        cbatch.env.pop("DOCKER_HOST", None)
        cbatch.start()
        proxy.close()
