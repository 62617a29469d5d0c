"""Torque's accounting sees the container: its job cgroup, or pbs_track adoption."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


pytestmark = [pytest.mark.docker, pytest.mark.harness]
CGROUPS = Path("/sys/fs/cgroup")
BURN = "i=0; while ((i < 400000)); do ((i++)); done"


@pytest.fixture
def job_cgroup():
    """Make torque/<job id> in every v1 controller, as a cgroups build of pbs_mom does."""
    if not (CGROUPS / "cpuacct").is_dir():
        pytest.skip("no cgroup v1 cpuacct hierarchy on this machine")
    job_id = f"{int(time.time()) % 100000}.cgroup"
    made = []
    for controller in ("cpuacct", "cpu", "memory", "pids"):
        path = CGROUPS / controller / "torque" / job_id
        if path.parent.parent.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            made.append(path)
    yield job_id, CGROUPS / "cpuacct" / "torque" / job_id
    # Docker makes the job's cgroup in the other controllers too: remove them all, deepest
    # first (Docker may be removing the container's own at the same moment)
    for path in CGROUPS.glob(f"*/torque/{job_id}"):
        for folder, _, _ in os.walk(path, topdown=False):
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
        try:
            path.parent.rmdir()
        except OSError:
            pass


def test_container_runs_inside_torques_job_cgroup_and_is_counted(daemon, run, job_cgroup):
    job_id, cpuacct = job_cgroup
    result = run(f"#!/bin/bash\ngrep cpuacct /proc/self/cgroup\n{BURN}\n", job_id=job_id)
    assert result.status == 0, result.err
    assert f":cpuacct:/torque/{job_id}/" in result.out
    used_s = int((cpuacct / "cpuacct.usage").read_text()) / 1e9
    assert used_s > 0.2, f"Torque's job cgroup counted only {used_s:.3f} s of CPU"
    record = daemon.wait_for_event("container_started", job_id=job_id)
    assert record["cgroup_parent"] == f"/torque/{job_id}"


def test_without_a_job_cgroup_the_container_is_adopted_as_the_job_user(daemon, run):
    """pbs_track (the harness plays tm_adopt's checks) adopts the container's own session,
    as the job's uid; the harness kills what was adopted when the job ends, as pbs_mom
    does, so adopting anything of the daemon's would kill it."""
    result = run(f"#!/bin/bash\n{BURN}\n")
    assert result.status == 0, result.err
    job_id = result.job.spec.job_id
    record = daemon.wait_for_event("job_adopted", job_id=job_id)
    adopted = (daemon.torque_home / "adopted" / job_id).read_text().split()[:2]
    assert adopted == [str(record["init_pid"])] * 2  # sid == pid: the container's init
    finished = daemon.wait_for_event("job_finished", job_id=job_id)
    assert finished["told_by"] == "keeper"
    assert daemon.proc.poll() is None


def test_jobs_that_end_at_once_never_get_the_daemon_adopted(daemon, run):
    ids = set()
    for _ in range(20):
        result = run("#!/bin/bash\ntrue\n")
        ids.add(result.job.spec.job_id)
        assert result.status == 0, result.err
        for line in (daemon.torque_home / "adopted" / result.job.spec.job_id).read_text(
                ).splitlines():
            sid = int(line.split()[0])
            assert sid not in (0, 1, os.getsid(daemon.proc.pid))
    assert daemon.proc.poll() is None
    assert not [r for r in daemon.events("adopt_failed") if r["job_id"] in ids]
