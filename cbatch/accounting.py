"""Torque's accounting of a job's container: its job cgroup, or pbs_mom's adoption.

A cgroups build of Torque (cgroup v1) creates <mount>/<controller>/torque/<job id> for
every job and reads resources_used from it. With Docker's cgroupfs driver, a container
created with cgroup_parent "/torque/<job id>" lands inside it (torque_parent), so Torque's
accounting, limits and cleanup cover the job's real work.

Without it, pbs_mom counts and kills a job by its sessions only; container processes are
outside them. Adopting the container's session (`pbs_track -a`, adopt) makes
resources_used count it and lets qdel reach it even if the starter is gone
(torque-contract.md §6). tm_adopt adopts getsid(pid), and only for a caller whose uid
owns that session leader: so pbs_track runs as the job's uid (root gets TM_EPERM), in a
session of its own, and only ever with the pid of the job's live container init. A pid
of 0 would adopt the caller's own session, and a stale pid someone else's; pbs_mom kills
what it adopted when the job ends, so either would let a job's end kill the wrong
processes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cbatch import peer
from cbatch.errors import CbatchError
from cbatch.batch import Job

TIMEOUT_S = 15
SETPRIV = "/usr/bin/setpriv"  # util-linux (Essential in Debian)
CGROUP_ROOT = Path("/sys/fs/cgroup")


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
    """Run `pbs_track -j <job id> -a <pid>` (OpenPBS: `pbs_attach -j <job id> -p <pid>`) as
    the job's user; (succeeded, what it said)."""
    problem = container_init(pid, job.uid, proc)
    if problem is not None:
        return False, problem
    if not os.access(pbs_track, os.X_OK):
        return False, f"{pbs_track} is not executable"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C"}
    port = job.env.get("PBS_MOMPORT", "")
    if port.isdigit():  # a multi-mom node: the job's own pbs_mom
        env["PBS_MOMPORT"] = port
    prefix, as_user = _as_user(job)
    try:
        done = subprocess.run([*prefix, str(pbs_track), "-j", job.job_id,
                               _pid_option(pbs_track), str(pid)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                              cwd="/", start_new_session=True, **as_user)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr).strip()[:500]


def _as_user(job: Job) -> tuple[list[str], dict]:
    """How to run a program as the job's uid, gid and groups: (argv prefix, subprocess
    arguments). Through setpriv when the node has it: Python then spawns with vfork,
    where its own user switch needs a fork that copies the daemon's whole address space
    (about 2 ms of the daemon's CPU per job). Either way the program runs with the job's
    credentials only: exec sets its saved ids to them, and a non-root uid has no
    capabilities."""
    if os.access(SETPRIV, os.X_OK):
        groups = ",".join(str(g) for g in job.groups)
        return [SETPRIV, f"--reuid={job.uid}", f"--regid={job.gid}",
                f"--groups={groups}" if groups else "--clear-groups", "--"], {}
    return [], {"user": job.uid, "group": job.gid, "extra_groups": list(job.groups)}


def _pid_option(tool: Path) -> str:
    """Torque's pbs_track adopts a pid's session with -a; OpenPBS's pbs_attach with -p."""
    return "-p" if tool.name == "pbs_attach" else "-a"


def torque_parent(job_id: str, driver: str, root: Path = CGROUP_ROOT) -> str | None:
    """The cgroup_parent for this job's container, or None when there is no job cgroup."""
    if driver != "cgroupfs":  # the systemd driver takes slices, not paths
        return None
    if (root / "cpuacct" / "torque" / job_id).is_dir():
        return f"/torque/{job_id}"
    return None


def oom_kills(pid: int, root: Path = CGROUP_ROOT, proc: Path = Path("/proc")) -> int:
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


def adopt_container(engine, container_id: str, pbs_track: Path, job: Job, exit_channel,
                    log) -> int | None:
    """pbs_track -a the container's session, so Torque counts it and qdel reaches it;
    the container's init pid on the host (None when Docker did not say).

    The keeper holds the container open until the job's end has been reported, so its
    init is alive here however short the job. Runs in a thread of its own; never raises.
    """
    try:
        pid = int(engine.inspect(container_id)["State"]["Pid"])
    except (CbatchError, KeyError, ValueError, TypeError) as exc:
        log.warning("adopt_failed", reason=f"no init pid: {exc}")
        return None
    ok, said = adopt(pbs_track, job, pid)
    if ok:
        exit_channel.mark_adopted()
        log.info("job_adopted", init_pid=pid)
    else:
        log.warning("adopt_failed", init_pid=pid, reason=said)
    return pid


def oom_killed(engine, container_id: str, log, init_pid: int | None = None,
               uid: int = -1) -> bool:
    """Was any process of the job OOM-killed (even if the job lived on)?

    While the keeper holds the container, its memory cgroup tells: read through
    `init_pid` when that is still the job's live container init, with no round trip to
    Docker. Otherwise Docker is asked; it flags OOMKilled only once the container has
    exited, so the owner learns why."""
    if init_pid is not None and container_init(init_pid, uid) is None:
        return oom_kills(init_pid) > 0
    try:
        state = engine.inspect(container_id).get("State", {})
    except CbatchError as exc:  # the job's end is known; only the OOM word is lost
        log.warning("inspect_failed", **exc.log_fields())
        return False
    if state.get("OOMKilled"):
        return True
    return bool(state.get("Running") and state.get("Pid") and oom_kills(int(state["Pid"])) > 0)
