"""Prove that a peer is a running Torque job of its uid, and collect what the job is.

Everything comes from the kernel (/proc) and Torque's own files, never from the request:
the request only contributes the shell argv and the stdin bytes pbs_mom wrote. What policy
decides on (queue, slots) comes from pbs_mom's record of the job, not its environment.
Paths are injectable so tests can use temporary directories.
"""

from __future__ import annotations

import os
import pwd
import stat as stat_
from pathlib import Path

from cbatch import peer as peer_
from cbatch import sisters
from cbatch.batch import Job, Record, proc_facts, torque_records
from cbatch.config import Config
from cbatch.errors import MotherSuperiorSilent, NotABatchJob, PolicyDenied

MAX_SCRIPT_BYTES = 16 * 1024 * 1024


def jobs_dir(pbs_home: Path) -> Path:
    return pbs_home / "mom_priv" / "jobs"


def prefix_of(job_id: str) -> str:
    """Torque's file prefix for a job id: array index brackets become a dash."""
    return job_id.replace("[", "-").replace("]", "")


def verify(cfg: Config, peer: peer_.Peer, argv: list[str], stdin: bytes, tty: bool = False,
           proc: Path = peer_.PROC) -> Job:
    """Prove the peer is a live Torque job task of peer.uid and describe it.

    The starter's shape and facts come from the kernel (proc_facts.read); the job's script
    and record from pbs_mom's files. `tty` (what the starter says) must match the shape.

    Raises:
        NotABatchJob: the peer is not (or no longer) a job pbs_mom started for that uid.
        PolicyDenied: root or system-uid jobs when the policy does not allow them.
    """
    facts = proc_facts.read(cfg, peer, tty, "Torque", proc)
    job_id, task, env, interactive = facts.job_id, facts.task, facts.env, facts.interactive
    jobs = jobs_dir(cfg.pbs_home)
    own = _own_prefix(jobs, job_id, env)  # this pbs_mom's name for the job's files
    if interactive:  # no stdin line: the script, if qsub -I was given one, by the job id
        script = jobs / (own + ".SC")
        script = script if os.path.lexists(script) else None
    elif task > 1:  # a TM task: the script is on the mother superior only
        script = jobs / (own + ".SC")
        script = script if os.path.lexists(script) else None
    else:
        script = _script_path(cfg, stdin, job_id)
    text = read_script(script, peer.uid) if script is not None else ""
    prefix = script.name[:-3] if script else own
    record = torque_records.read(jobs, prefix, job_id)
    try:
        entry = pwd.getpwuid(peer.uid)
    except KeyError:
        raise NotABatchJob(f"uid {peer.uid} has no passwd entry on this node") from None
    if task > 1 and script is None:
        text = _sister_directives(cfg, record, job_id, entry)
    if not peer_.is_alive(peer.pid, peer.start_ticks, proc):
        raise NotABatchJob("the job's starter process ended while cbatch checked it")
    return Job(
        job_id=job_id, prefix=prefix, task=task,
        user=entry.pw_name, uid=peer.uid, gid=peer.gid, groups=peer.groups,
        home=Path(entry.pw_dir), cwd=facts.cwd, umask=facts.umask, env=env, argv=tuple(argv),
        stdin=stdin, script=script, script_text=text,
        queue=record.queue, rlimits=facts.rlimits, peer=peer,
        interactive=interactive, slots=record.slots, record_problem=record.problem)


def record(cfg: Config, job_id: str) -> Record:
    """pbs_mom's record of a job on this node (its .JB, found under any multi-mom name)."""
    jobs = jobs_dir(cfg.pbs_home)
    found = sisters.find_job_file(jobs, prefix_of(job_id), ".JB")
    if found is None:
        return Record("", 1, "no record of the job on this node")
    return torque_records.read(jobs, found.name[:-3], job_id)


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
        raise NotABatchJob(f"this node has no record of job {job_id} ({record.problem})")
    if record.owner != entry.pw_name:
        raise NotABatchJob(f"job {job_id} is not yours on this node", owner=record.owner)
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
        raise NotABatchJob(f"job {job_id}'s script on {mother} is not yours", uid=uid)
    return block


def _script_path(cfg: Config, stdin: bytes, job_id: str) -> Path:
    """The top task's .SC path, from the stdin line pbs_mom wrote."""
    jobs = jobs_dir(cfg.pbs_home)
    line = stdin.decode("utf-8", "replace").strip()
    if line.startswith("exec "):
        line = line[len("exec "):].lstrip()
    path = Path(line.split()[0]) if line else Path()
    if (not path.name.endswith(".SC") or os.path.realpath(path.parent) != os.path.realpath(jobs)
            or not path.name.startswith(prefix_of(job_id))):
        raise NotABatchJob("cbatch-starter must be started by pbs_mom as a Torque job "
                            "(stdin does not name this job's script)", stdin=line[:200])
    return path


def read_script(path: Path, uid: int) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NotABatchJob(f"cannot open the job script {path.name}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat_.S_ISREG(st.st_mode) or st.st_uid != uid:
            raise NotABatchJob(f"the job script {path.name} is not a regular file owned by you")
        data = f.read(MAX_SCRIPT_BYTES + 1)
    if len(data) > MAX_SCRIPT_BYTES:
        raise PolicyDenied(f"the job script is larger than {MAX_SCRIPT_BYTES // 2**20} MiB")
    return data.decode("utf-8", "replace")
