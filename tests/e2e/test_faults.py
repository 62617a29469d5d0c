"""Faults a production node sees: Docker away, starters killed, load, leftovers."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import USER, make_daemon
from tests.harness.dockerproxy import DockerProxy

pytestmark = [pytest.mark.docker, pytest.mark.harness]


@pytest.fixture
def proxied(image_ids, site_dirs, test_user):
    """A daemon that reaches Docker through a proxy the test can cut."""
    d = make_daemon(image_ids, site_dirs, container={"engine_retry_s": 3})
    proxy = DockerProxy(d.root / "docker.sock")
    d.env["DOCKER_HOST"] = proxy.url
    d.start()
    yield d, proxy
    proxy.close()
    d.cleanup()


def test_docker_down_at_job_start_never_runs_the_job_and_the_next_job_runs(proxied, run):
    d, proxy = proxied
    proxy.cut()
    result = run("#!/bin/bash\necho ran\n", d=d)
    assert result.status == 125 and result.out == ""
    assert result.err == ("cbatch: the container engine on this node is not reachable; the job "
                          "can be requeued elsewhere\n")
    record = d.wait_for_event("job_failed", job_id=result.job.spec.job_id)
    assert record["error"] == "EngineUnavailable" and record["user"] == USER
    proxy.restore()
    assert run("#!/bin/bash\necho back\n", d=d).out == "back\n"
    assert d.proc.poll() is None


def test_a_short_docker_outage_under_a_running_job_is_ridden_out(proxied, submit):
    d, proxy = proxied
    job = submit("#!/bin/bash\nfor ((i=1; i<=100; i++)); do echo $i; sleep 0.02; done\nexit 6\n", d=d)
    d.wait_for_event("container_started", job_id=job.spec.job_id)
    proxy.cut()
    d.wait_for_event("engine_lost", job_id=job.spec.job_id)
    time.sleep(1)
    proxy.restore()
    assert job.wait(30) == 6
    assert job.output() == ("".join(f"{i}\n" for i in range(1, 101)), "")


def test_docker_gone_for_good_ends_the_job_node_side_and_cleanup_removes_it(proxied, submit, api):
    d, proxy = proxied
    job = submit("#!/bin/bash\necho started\nsleep 300\n", d=d)
    d.wait_for_event("container_started", job_id=job.spec.job_id)
    proxy.cut()
    assert job.wait(30) == 125
    out, err = job.output()
    assert out == "started\n"
    assert err == ("cbatch: the container engine on this node went away while the job ran and "
                   "did not come back; the job can be requeued\n")
    label = {"label": f"cbatch.job_id={job.spec.job_id}"}
    assert api.containers(all=True, filters=label)  # Docker itself never went away here
    cleanup = subprocess.run([sys.executable, "-m", "cbatch.admin", "cleanup"],
                             capture_output=True, text=True, timeout=60)
    assert f"job {job.spec.job_id} user {USER}: starter gone" in cleanup.stdout, cleanup.stderr
    assert not api.containers(all=True, filters=label)


def test_fifty_killed_starters_leave_no_container(daemon, submit, api):
    def kill_one(_):
        job = submit("#!/bin/bash\nsleep 300\n")
        daemon.wait_for_event("container_started", job_id=job.spec.job_id, timeout=60)
        os.kill(job.starter_pid, signal.SIGKILL)
        assert job.wait(60) == 256 + signal.SIGKILL
        label = {"label": f"cbatch.job_id={job.spec.job_id}"}
        deadline = time.monotonic() + 5
        while api.containers(all=True, filters=label):
            assert time.monotonic() < deadline, f"{job.spec.job_id}: container left after 5 s"
            time.sleep(0.1)
        return job.spec.job_id

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        done = list(pool.map(kill_one, range(50)))
    assert len(done) == 50
    time.sleep(0.5)
    left = [c for c in api.containers(all=True, filters={"label": "cbatch"})
            if c["Labels"].get("cbatch.job_id") in done]
    assert not left


def test_health_says_error_when_the_daemon_is_down(fresh_daemon):
    result = subprocess.run([sys.executable, "-m", "cbatch.admin", "--config",
                             str(fresh_daemon.config_path), "health"], capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.startswith("ERROR cbatch: cbatchd is not running")
    assert result.stdout.count("\n") == 1 and result.returncode == 0
