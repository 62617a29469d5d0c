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


def oom_kills(pid: int, root: Path = ROOT, proc: Path = Path("/proc")) -> int:
    """How many processes the kernel's OOM killer took in pid's memory cgroup (v1's
    memory.oom_control, v2's memory.events): Docker only flags OOMKilled once the
    container has exited, and a job's end is known before that."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            files = [root / "memory" / path.lstrip("/") / "memory.oom_control"]
        elif controllers == "":
            files = [root / path.lstrip("/") / "memory.events"]
        else:
            continue
        for name in files:
            try:
                for row in name.read_text().splitlines():
                    key, _, value = row.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except (OSError, ValueError):
                continue
    return 0
