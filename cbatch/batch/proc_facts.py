"""What the kernel says about a job's starter, the same for every PBS family: its mom
parent (or an interactive job's root session leader), environment, cwd, umask, rlimits.

Only /proc is read; the batch system's own files are the system modules' business.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from cbatch import peer as peer_
from cbatch import policy
from cbatch.config import Config
from cbatch.errors import NotABatchJob, PolicyDenied

MAX_ENVIRON_BYTES = 4 * 1024 * 1024
JOB_ID = re.compile(r"^[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9_-][A-Za-z0-9_.-]*)?$")  # 12[3].server

# /proc/<pid>/limits row titles -> Docker ulimit names
_RLIMITS = {
    "Max cpu time": "cpu", "Max file size": "fsize", "Max data size": "data",
    "Max stack size": "stack", "Max core file size": "core", "Max resident set": "rss",
    "Max processes": "nproc", "Max open files": "nofile", "Max locked memory": "memlock",
    "Max address space": "as", "Max file locks": "locks", "Max pending signals": "sigpending",
    "Max msgqueue size": "msgqueue", "Max nice priority": "nice",
    "Max realtime priority": "rtprio", "Max realtime timeout": "rttime",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Facts:
    interactive: bool
    env: dict[str, str]
    cwd: Path
    umask: int
    rlimits: dict[str, tuple[int, int]]
    job_id: str
    task: int


def read(cfg: Config, peer: peer_.Peer, tty: bool, system: str,
         proc: Path = peer_.PROC) -> Facts:
    """The starter's facts, once the policy admits its uid and its shape proves pbs_mom
    started it as a job.

    A batch job or TM task is a session leader whose parent is root's pbs_mom; an
    interactive job (qsub -I) is the child of a root session leader that pbs_mom forked,
    with the session's terminal as its own. `tty` (what the starter says) must match.

    Raises:
        NotABatchJob: the peer is not (or no longer) a job pbs_mom started.
        PolicyDenied: root or system-uid jobs when the policy does not allow them.
    """
    try:
        policy.admit(cfg, peer.uid)
    except PolicyDenied as exc:  # logged with the job id it claims, marked as claimed
        exc.fields["claimed_job_id"] = claimed_job_id(peer.pid, proc)
        raise
    require_mom = cfg.require_pbs_mom_parent
    what = f"cbatch-starter must be started by pbs_mom as a {system} job"
    st = peer.stat  # as read at accept
    try:
        if st is None:
            raise ValueError("the peer's process was not read")
        interactive = st.session != peer.pid
        mom_pid = _interactive_mom(peer.pid, st, proc, what) if interactive else st.ppid
        mom = peer_.stat(mom_pid, proc)
        mom_uid = uid_of(mom_pid, proc)
        environ = _read_limited(proc / str(peer.pid) / "environ", MAX_ENVIRON_BYTES)
        cwd = Path(os.readlink(proc / str(peer.pid) / "cwd"))
        limits_text = (proc / str(peer.pid) / "limits").read_text()
    except (OSError, KeyError, ValueError) as exc:
        raise NotABatchJob("the job's starter process vanished while cbatch checked it; "
                            "ask your admin to look at the node", pid=peer.pid) from exc
    if require_mom and not (mom.comm == "pbs_mom" and mom_uid == 0):
        raise NotABatchJob(f"{what} (its parent is not pbs_mom)", pid=peer.pid,
                            parent=mom.comm)
    env = parse_environ(environ)
    if interactive != bool(tty) or (
            interactive and env.get("PBS_ENVIRONMENT") != "PBS_INTERACTIVE"):
        raise NotABatchJob(f"{what} (its terminal does not match the job's kind)",
                            pid=peer.pid)
    job_id = env.get("PBS_JOBID", "")
    if not JOB_ID.match(job_id):
        raise NotABatchJob(f"the job has no PBS_JOBID; cbatch-starter runs only as a "
                            f"{system} job starter", pid=peer.pid)
    task = int(env["PBS_TASKNUM"]) if env.get("PBS_TASKNUM", "").isdigit() else 1
    return Facts(interactive, env, cwd, peer.umask, parse_limits(limits_text), job_id, task)


def claimed_job_id(pid: int, proc: Path = peer_.PROC) -> str | None:
    """PBS_JOBID as the process's environment claims it: for the refusal's log record only,
    since a refused peer is never proven to be that job."""
    try:
        env = parse_environ(_read_limited(proc / str(pid) / "environ", MAX_ENVIRON_BYTES))
    except OSError:
        return None
    claimed = env.get("PBS_JOBID", "")
    return claimed[:100] if JOB_ID.match(claimed) else None


def _interactive_mom(pid: int, st: peer_.ProcStat, proc: Path, what: str) -> int:
    """The pid that must be pbs_mom when the peer has the interactive job's shape.

    pbs_mom's child for a qsub -I job calls setsid, takes the job's terminal and stays
    as the root session leader; the job's process (the starter) is its child and shares
    the session and the terminal.
    """
    leader = peer_.stat(st.ppid, proc)
    if not (st.session == st.ppid and leader.session == st.ppid and uid_of(st.ppid, proc) == 0
            and st.tty_nr != 0 and leader.tty_nr == st.tty_nr):
        raise NotABatchJob(f"{what} (this process is not a job's session leader)", pid=pid)
    return leader.ppid


def uid_of(pid: int, proc: Path) -> int:
    """The real uid of a process."""
    return int(peer_.status_field(pid, "Uid", proc).split()[0])


def _read_limited(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


def parse_limits(text: str) -> dict[str, tuple[int, int]]:
    limits = {}
    for line in text.splitlines()[1:]:
        for title, name in _RLIMITS.items():
            if line.startswith(title + " "):
                soft, hard = line[len(title):].split()[:2]
                limits[name] = (_limit(soft), _limit(hard))
    return limits


def _limit(word: str) -> int:
    return -1 if word == "unlimited" else int(word)
