"""Ask pbs_mom to adopt a job's container (`pbs_track -a`), when no job cgroup exists.

Without a cgroups build, pbs_mom counts and kills a job by its sessions only; container
processes are outside them. Adopting the container's session makes resources_used count
it and lets qdel reach it even if the starter is gone (torque-contract.md §6).

tm_adopt adopts getsid(pid), and only for a caller whose uid owns that session leader:
so pbs_track runs as the job's uid (root gets TM_EPERM), in a session of its own, and
only ever with the pid of the job's live container init. A pid of 0 would adopt the
caller's own session, and a stale pid someone else's; pbs_mom kills what it adopted when
the job ends, so either would let a job's end kill the wrong processes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cbatch import peer
from cbatch.torque import Job

TIMEOUT_S = 15


def container_init(pid: int, uid: int, proc: Path = peer.PROC) -> str | None:
    """Why `pid` is not a live container init of `uid` (a session leader in a pid
    namespace other than ours), or None when it is."""
    if pid <= 1:
        return f"pid {pid} is not a container's init"
    try:
        st = peer.stat(pid, proc)
        owner = os.stat(proc / str(pid)).st_uid
        namespace = os.readlink(proc / str(pid) / "ns" / "pid")
        ours = os.readlink(proc / "self" / "ns" / "pid")
    except (OSError, ValueError) as exc:
        return f"pid {pid} is gone ({exc.__class__.__name__})"
    if namespace == ours:
        return f"pid {pid} runs in the host's pid namespace"
    if owner != uid:
        return f"pid {pid} belongs to uid {owner}, not the job's"
    if st.session != pid:
        return f"pid {pid} does not lead its session"
    return None


def adopt(pbs_track: Path, job: Job, pid: int, proc: Path = peer.PROC) -> tuple[bool, str]:
    """Run `pbs_track -j <job id> -a <pid>` as the job's user; (succeeded, what it said)."""
    problem = container_init(pid, job.uid, proc)
    if problem is not None:
        return False, problem
    if not os.access(pbs_track, os.X_OK):
        return False, f"{pbs_track} is not executable"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C"}
    port = job.env.get("PBS_MOMPORT", "")
    if port.isdigit():  # a multi-mom node: the job's own pbs_mom
        env["PBS_MOMPORT"] = port
    try:
        done = subprocess.run([str(pbs_track), "-j", job.job_id, "-a", str(pid)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                              cwd="/", user=job.uid, group=job.gid,
                              extra_groups=list(job.groups), start_new_session=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr).strip()[:500]
