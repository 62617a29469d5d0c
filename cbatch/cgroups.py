"""Place a job's container under Torque's own job cgroup, when Torque made one.

A cgroups build of Torque (cgroup v1) creates <mount>/<controller>/torque/<job id> for
every job and reads resources_used from it. With Docker's cgroupfs driver, a container
created with cgroup_parent "/torque/<job id>" lands inside it, so Torque's accounting,
limits and cleanup cover the job's real work. Without it, adopt.py asks pbs_mom to
adopt the container's init instead.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def torque_parent(job_id: str, driver: str, root: Path = ROOT) -> str | None:
    """The cgroup_parent for this job's container, or None when there is no job cgroup."""
    if driver != "cgroupfs":  # the systemd driver takes slices, not paths
        return None
    if (root / "cpuacct" / "torque" / job_id).is_dir():
        return f"/torque/{job_id}"
    return None
