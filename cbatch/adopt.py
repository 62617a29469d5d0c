"""Ask pbs_mom to adopt a job's container init (`pbs_track -a`), when no job cgroup exists.

Without a cgroups build, pbs_mom counts and kills a job by its session only; container
processes are outside it. Adopting the container's init makes resources_used count it
and lets qdel reach it even if the starter is gone (torque-contract.md §6).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def adopt(pbs_track: Path, job_id: str, pid: int) -> tuple[bool, str]:
    """Run pbs_track -j <job id> -a <pid>; (succeeded, what it said)."""
    if not os.access(pbs_track, os.X_OK):
        return False, f"{pbs_track} is not executable"
    try:
        done = subprocess.run([str(pbs_track), "-j", job_id, "-a", str(pid)],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr).strip()[:500]
