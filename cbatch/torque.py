"""Prove that a peer is a running Torque job of its uid, and collect what the job is.

Everything comes from the kernel (/proc) and Torque's own files, never from the request:
the request only contributes the shell argv and the stdin bytes pbs_mom wrote. What policy
decides on (queue, slots) comes from pbs_mom's record of the job, not its environment.
Paths are injectable so tests can use temporary directories.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import stat as stat_
from pathlib import Path

from cbatch import peer as peer_
from cbatch import policy, sisters, torque_records
from cbatch.config import Config
from cbatch.errors import MotherSuperiorSilent, NotATorqueJob, PolicyDenied

MAX_SCRIPT_BYTES = 16 * 1024 * 1024
_JOB_ID = re.compile(r"^[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9_-][A-Za-z0-9_.-]*)?$")  # 12[3].server
MAX_ENVIRON_BYTES = 4 * 1024 * 1024

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
class Job:
    """One job task as pbs_mom started it, proven from the kernel and Torque's files."""

    job_id: str  # PBS_JOBID, e.g. "2[1].vm"
    prefix: str  # Torque's file prefix, e.g. "2-1.vm" (names the .SC and spool files)
    task: int  # PBS_TASKNUM: 1 for the job's top task, >1 for TM tasks (pbsdsh, mpiexec)
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path
    cwd: Path
    umask: int
    env: dict[str, str]
    argv: tuple[str, ...]  # what pbs_mom passed after the starter's own name
    stdin: bytes  # what pbs_mom wrote on the starter's stdin
    script: Path | None  # mom_priv/jobs/<prefix>.SC; an interactive job may have none
    script_text: str
    queue: str  # from pbs_mom's record (torque_records); "" when unknown
    rlimits: dict[str, tuple[int, int]]  # docker ulimit name -> (soft, hard); -1 = unlimited
    peer: peer_.Peer
    interactive: bool = False  # qsub -I: the starter's fds 0-2 are the job's terminal
    slots: int = 1  # processors Torque gave the job on this node (pbs_mom's record)
    record_problem: str | None = None  # why pbs_mom's record gave no queue or slots

    @property
    def container_name(self) -> str:
        name = "cbatch-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in self.prefix)
        return name if self.task <= 1 else f"{name}-t{self.task}"


def jobs_dir(torque_home: Path) -> Path:
    return torque_home / "mom_priv" / "jobs"


def prefix_of(job_id: str) -> str:
    """Torque's file prefix for a job id: array index brackets become a dash."""
    return job_id.replace("[", "-").replace("]", "")


def verify(cfg: Config, peer: peer_.Peer, argv: list[str], stdin: bytes, tty: bool = False,
           proc: Path = peer_.PROC) -> Job:
    """Prove the peer is a live Torque job task of peer.uid and describe it.

    A batch job or TM task is a session leader whose parent is pbs_mom; an interactive
    job (qsub -I) is the child of a root session leader that pbs_mom forked, with the
    session's terminal as its own. `tty` (what the starter says) must match that shape.

    Raises:
        NotATorqueJob: the peer is not (or no longer) a job pbs_mom started for that uid.
        PolicyDenied: root or system-uid jobs when the policy does not allow them.
    """
    try:
        policy.admit(cfg, peer.uid)
    except PolicyDenied as exc:
        exc.fields["claimed_job_id"] = _claimed_job_id(peer.pid, proc)
        raise
    st = peer.stat  # as read at accept
    try:
        if st is None:
            raise ValueError("the peer's process was not read")
        interactive = st.session != peer.pid
        mom_pid = _interactive_mom(peer.pid, st, proc) if interactive else st.ppid
        mom = peer_.stat(mom_pid, proc)
        mom_uid = _uid(mom_pid, proc)
        environ = _read_limited(proc / str(peer.pid) / "environ", MAX_ENVIRON_BYTES)
        cwd = Path(os.readlink(proc / str(peer.pid) / "cwd"))
        umask = peer.umask
        limits_text = (proc / str(peer.pid) / "limits").read_text()
    except (OSError, KeyError, ValueError) as exc:
        raise NotATorqueJob("the job's starter process vanished while cbatch checked it; "
                            "ask your admin to look at the node", pid=peer.pid) from exc
    if cfg.require_pbs_mom_parent and not (mom.comm == "pbs_mom" and mom_uid == 0):
        raise NotATorqueJob("cbatch-starter must be started by pbs_mom as a Torque job "
                            "(its parent is not pbs_mom)", pid=peer.pid, parent=mom.comm)
    env = _parse_environ(environ)
    if interactive != bool(tty) or (
            interactive and env.get("PBS_ENVIRONMENT") != "PBS_INTERACTIVE"):
        raise NotATorqueJob("cbatch-starter must be started by pbs_mom as a Torque job "
                            "(its terminal does not match the job's kind)", pid=peer.pid)
    job_id = env.get("PBS_JOBID", "")
    if not _JOB_ID.match(job_id):
        raise NotATorqueJob("the job has no PBS_JOBID; cbatch-starter runs only as a Torque "
                            "job starter", pid=peer.pid)
    task = int(env["PBS_TASKNUM"]) if env.get("PBS_TASKNUM", "").isdigit() else 1
    jobs = jobs_dir(cfg.torque_home)
    own = _own_prefix(jobs, job_id, env)  # this pbs_mom's name for the job's files
    if interactive:  # no stdin line: the script, if qsub -I was given one, by the job id
        script = jobs / (own + ".SC")
        script = script if os.path.lexists(script) else None
    elif task > 1:  # a TM task: the script is on the mother superior only
        script = jobs / (own + ".SC")
        script = script if os.path.lexists(script) else None
    else:
        script = _script_path(cfg, stdin, job_id, task)
    text = _read_script(script, peer.uid) if script is not None else ""
    prefix = script.name[:-3] if script else own
    record = torque_records.read(jobs, prefix, job_id)
    try:
        entry = pwd.getpwuid(peer.uid)
    except KeyError:
        raise NotATorqueJob(f"uid {peer.uid} has no passwd entry on this node") from None
    if task > 1 and script is None:
        text = _sister_directives(cfg, record, job_id, entry)
    if not peer_.is_alive(peer.pid, peer.start_ticks, proc):
        raise NotATorqueJob("the job's starter process ended while cbatch checked it")
    return Job(
        job_id=job_id, prefix=prefix, task=task,
        user=entry.pw_name, uid=peer.uid, gid=peer.gid, groups=peer.groups,
        home=Path(entry.pw_dir), cwd=cwd, umask=umask, env=env, argv=tuple(argv), stdin=stdin, script=script, script_text=text,
        queue=record.queue, rlimits=_parse_limits(limits_text), peer=peer,
        interactive=interactive, slots=record.slots, record_problem=record.problem)


def _own_prefix(jobs: Path, job_id: str, env: dict[str, str]) -> str:
    """The prefix of this pbs_mom's files for the job: <prefix>, or <prefix><manager port>
    on a multi-mom node (its TM tasks' PBS_MOMPORT)."""
    prefix, port = prefix_of(job_id), env.get("PBS_MOMPORT", "")
    if port.isdigit() and os.path.lexists(jobs / f"{prefix}{port}.JB"):
        return prefix + port
    return prefix


def _sister_directives(cfg: Config, record: torque_records.Record, job_id: str,
                       entry: pwd.struct_passwd) -> str:
    """A sister's TM task: the job must be this user's by pbs_mom's record, and its
    directives come from the mother superior's cbatchd (sisters.py)."""
    if record.problem and not record.hosts:
        raise NotATorqueJob(f"this node has no record of job {job_id} ({record.problem})")
    if record.owner != entry.pw_name:
        raise NotATorqueJob(f"job {job_id} is not yours on this node", owner=record.owner)
    if cfg.sister_port is None:
        raise MotherSuperiorSilent("this node does not ask a job's mother superior for its "
                                   "#CBATCH lines (torque.sister_port is off); the task did "
                                   "not run; tell your admin")
    mother = record.hosts[0]
    try:
        uid, block = sisters.ask(mother, job_id, port=cfg.sister_port)
    except sisters.SisterError as exc:
        raise MotherSuperiorSilent(f"the job's mother superior {mother} did not say which "
                                   "image the job chose; the task did not run; tell your "
                                   "admin", reason=str(exc)) from exc
    if uid != entry.pw_uid:
        raise NotATorqueJob(f"job {job_id}'s script on {mother} is not yours", uid=uid)
    return block


def _claimed_job_id(pid: int, proc: Path) -> str | None:
    """PBS_JOBID as the process's environment claims it: for the refusal's log record only,
    since a refused peer is never proven to be that job."""
    try:
        env = _parse_environ(_read_limited(proc / str(pid) / "environ", MAX_ENVIRON_BYTES))
    except OSError:
        return None
    claimed = env.get("PBS_JOBID", "")
    return claimed[:100] if _JOB_ID.match(claimed) else None


def _interactive_mom(pid: int, st: peer_.ProcStat, proc: Path) -> int:
    """The pid that must be pbs_mom when the peer has the interactive job's shape.

    pbs_mom's child for a qsub -I job calls setsid, takes the job's terminal and stays
    as the root session leader; the job's process (the starter) is its child and shares
    the session and the terminal.
    """
    leader = peer_.stat(st.ppid, proc)
    if not (st.session == st.ppid and leader.session == st.ppid and _uid(st.ppid, proc) == 0
            and st.tty_nr != 0 and leader.tty_nr == st.tty_nr):
        raise NotATorqueJob("cbatch-starter must be started by pbs_mom as a Torque job "
                            "(this process is not a job's session leader)", pid=pid)
    return leader.ppid


def _uid(pid: int, proc: Path) -> int:
    """The real uid of a process."""
    return int(peer_.status_field(pid, "Uid", proc).split()[0])


def _script_path(cfg: Config, stdin: bytes, job_id: str, task: int) -> Path:
    """The top task's .SC path, from the stdin line pbs_mom wrote."""
    jobs = jobs_dir(cfg.torque_home)
    line = stdin.decode("utf-8", "replace").strip()
    if line.startswith("exec "):
        line = line[len("exec "):].lstrip()
    path = Path(line.split()[0]) if line else Path()
    if (not path.name.endswith(".SC") or os.path.realpath(path.parent) != os.path.realpath(jobs)
            or not path.name.startswith(prefix_of(job_id))):
        raise NotATorqueJob("cbatch-starter must be started by pbs_mom as a Torque job "
                            "(stdin does not name this job's script)", stdin=line[:200])
    return path


def _read_script(path: Path, uid: int) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NotATorqueJob(f"cannot open the job script {path.name}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat_.S_ISREG(st.st_mode) or st.st_uid != uid:
            raise NotATorqueJob(f"the job script {path.name} is not a regular file owned by you")
        data = f.read(MAX_SCRIPT_BYTES + 1)
    if len(data) > MAX_SCRIPT_BYTES:
        raise PolicyDenied(f"the job script is larger than {MAX_SCRIPT_BYTES // 2**20} MiB")
    return data.decode("utf-8", "replace")


def _read_limited(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def _parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


def _parse_limits(text: str) -> dict[str, tuple[int, int]]:
    limits = {}
    for line in text.splitlines()[1:]:
        for title, name in _RLIMITS.items():
            if line.startswith(title + " "):
                soft, hard = line[len(title):].split()[:2]
                limits[name] = (_limit(soft), _limit(hard))
    return limits


def _limit(word: str) -> int:
    return -1 if word == "unlimited" else int(word)
