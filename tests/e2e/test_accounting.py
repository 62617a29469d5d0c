"""Torque's accounting sees the container: its job cgroup, or pbs_track adoption."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import make_daemon

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
    # Docker makes the job's cgroup in the other controllers too: remove them all
    for path in CGROUPS.glob(f"*/torque/{job_id}"):
        for child in sorted(path.glob("**/"), key=lambda p: -len(p.parts)):
            if child != path:
                child.rmdir()
        path.rmdir()
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


def test_without_a_job_cgroup_the_container_init_is_adopted(image_ids, site_dirs, test_user, run):
    d = make_daemon(image_ids, site_dirs)
    record_file = d.root / "pbs_track.calls"
    fake = d.root / "pbs_track"  # Torque is not installed here: record what pbs_mom would get
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {record_file}\n"
                    f"tr '\\0' ' ' < /proc/$4/cmdline >> {record_file}; echo >> {record_file}\n")
    os.chmod(fake, 0o755)
    settings = dict(d.settings)
    settings["torque"] = dict(settings["torque"], pbs_track=str(fake))
    d.write_config(settings)
    d.start()
    try:
        result = run("#!/bin/bash\nsleep 1\n", d=d)
        assert result.status == 0
        record = d.wait_for_event("job_adopted", job_id=result.job.spec.job_id)
        args, cmdline = record_file.read_text().splitlines()[:2]
        assert args == f"-j {result.job.spec.job_id} -a {record['init_pid']}"
        assert "docker-init" in cmdline  # the container's init, as seen from the host
    finally:
        d.cleanup()
