"""Prove that a peer is a running OpenPBS job of its uid, and collect what the job is.

OpenPBS has no job starter: cbatch's execjob_launch hook (hooks/openpbs/cbatch_hook.py)
puts cbatch-starter in front of every job and TM task, and, as root inside pbs_mom, writes
what the mom knows of the job (queue, owner, exec_host) to <PBS_HOME>/mom_priv/cbatch/
<job id>.json. Policy decides on that record, never on the job's environment. The shape
of the starter (parent root pbs_mom) and the .SC named on stdin prove the job itself.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
from pathlib import Path

from cbatch import peer as peer_
from cbatch.batch import Job, Record, proc_facts, read_root_record, torque
from cbatch.config import Config
from cbatch.errors import NotABatchJob

MAX_RECORD_BYTES = 1024 * 1024
MAX_SLOTS = 1024
_CHUNK = re.compile(r"^([^/]+)/(\d+)(?:\*(\d+))?$")  # exec_host entry: vm-pbs/0*2


def jobs_dir(home: Path) -> Path:
    return home / "mom_priv" / "jobs"


def records_dir(home: Path) -> Path:
    """Where cbatch's hook writes the mom's facts about each job (root's, 0755)."""
    return home / "mom_priv" / "cbatch"


def verify(cfg: Config, peer: peer_.Peer, argv: list[str], stdin: bytes, tty: bool = False,
           proc: Path = peer_.PROC) -> Job:
    """Prove the peer is a live OpenPBS job task of peer.uid and describe it.

    A script job's stdin names <PBS_HOME>/mom_priv/jobs/<job id>.SC, owned by the uid;
    `qsub -- cmd` (stdin empty, no .SC) runs its argv as given, as do TM tasks.

    Raises:
        NotABatchJob: the peer is not (or no longer) a job pbs_mom started for that uid.
        PolicyDenied: root or system-uid jobs when the policy does not allow them.
    """
    facts = proc_facts.read(cfg, peer, tty, "OpenPBS", proc)
    job_id, task = facts.job_id, facts.task
    jobs = jobs_dir(cfg.pbs_home)
    own = jobs / f"{job_id}.SC"
    if facts.interactive or task > 1 or not stdin.strip():
        script = own if os.path.lexists(own) else None
    else:
        script = _script_path(jobs, stdin, job_id)
    text = torque.read_script(script, peer.uid) if script is not None else ""
    try:
        entry = pwd.getpwuid(peer.uid)
    except KeyError:
        raise NotABatchJob(f"uid {peer.uid} has no passwd entry on this node") from None
    found = record(cfg, job_id)
    if found.owner and found.owner != entry.pw_name:
        raise NotABatchJob(f"job {job_id} is not yours on this node", owner=found.owner)
    if not peer_.is_alive(peer.pid, peer.start_ticks, proc):
        raise NotABatchJob("the job's starter process ended while cbatch checked it")
    direct = task <= 1 and not facts.interactive and not stdin.strip()
    return Job(
        job_id=job_id, prefix=job_id, task=task,
        user=entry.pw_name, uid=peer.uid, gid=peer.gid, groups=peer.groups,
        home=Path(entry.pw_dir), cwd=facts.cwd, umask=facts.umask, env=facts.env,
        argv=tuple(argv), stdin=stdin, script=script, script_text=text,
        queue=found.queue, rlimits=facts.rlimits, peer=peer, interactive=facts.interactive,
        slots=found.slots, record_problem=found.problem, direct=direct,
        sigpipe_ignored=False)


def record(cfg: Config, job_id: str) -> Record:
    """The mom's facts about a job as cbatch's hook wrote them (root-owned JSON)."""
    data, problem = read_root_record(records_dir(cfg.pbs_home) / f"{job_id}.json",
                                     MAX_RECORD_BYTES)
    if problem:
        return Record("", 1, problem)
    return parse(data, job_id, os.uname().nodename)


def parse(data: bytes, job_id: str, node: str) -> Record:
    """Record from the hook's JSON; it must be this job's."""
    try:
        facts = json.loads(data)
    except ValueError as exc:
        return Record("", 1, f"the job record is not JSON: {exc}")
    if not isinstance(facts, dict) or facts.get("job_id") != job_id:
        return Record("", 1, "the job record is not this job's")
    queue, owner = str(facts.get("queue") or ""), str(facts.get("owner") or "")
    # a mom's hook sees exec_vnode; exec_host may still be unset there
    exec_host = str(facts.get("exec_host") or "") or _as_exec_host(
        str(facts.get("exec_vnode") or ""))
    slots, hosts = slots_on(exec_host, str(facts.get("node") or node)), hosts_of(exec_host)
    problem = None if slots else "the job record's exec_host names no slots on this node"
    return Record(queue, min(slots, MAX_SLOTS) or 1, problem, owner, hosts)


def _as_exec_host(exec_vnode: str) -> str:
    """exec_vnode's chunks in exec_host's shape: "(vm:ncpus=2:mem=1gb)+(n2[0]:ncpus=1)"
    -> "vm/0*2+n2/0*1" (a vnode "host[i]" counts for its host)."""
    chunks = []
    for chunk in exec_vnode.split("+") if exec_vnode.strip() else []:
        parts = chunk.strip().strip("()").split(":")
        host = parts[0].partition("[")[0]
        ncpus = next((p[6:] for p in parts[1:] if p.startswith("ncpus=")), "1")
        chunks.append(f"{host}/0*{ncpus}" if ncpus.isdigit() else "malformed")
    return "+".join(chunks)


def hosts_of(exec_host: str) -> tuple[str, ...]:
    """exec_host's nodes in order, each once: "n2/0*2+n1/0" -> (n2, n1)."""
    hosts: list[str] = []
    for entry in exec_host.split("+") if exec_host.strip() else []:
        host = entry.strip().partition("/")[0]
        if host and host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def slots_on(exec_host: str, node: str) -> int:
    """CPUs OpenPBS's exec_host gives this node ("vm/0*2+n2/0" -> 2 on vm); 0 if none or
    malformed. A job on one host is on this node whatever the host is called."""
    counts: dict[str, int] = {}
    for entry in exec_host.split("+") if exec_host.strip() else []:
        match = _CHUNK.match(entry.strip())
        if not match:
            return 0
        counts[match[1]] = counts.get(match[1], 0) + int(match[3] or 1)
    if len(counts) == 1:
        return next(iter(counts.values()))
    short = node.split(".")[0]
    return sum(n for host, n in counts.items() if host.split(".")[0] == short)


def _script_path(jobs: Path, stdin: bytes, job_id: str) -> Path:
    """The job's .SC, from the one line pbs_mom wrote on stdin."""
    line = stdin.decode("utf-8", "replace").strip()
    try:  # the shell reads it: array ids come quoted, 11\[1\].vm.SC
        words = shlex.split(line)
    except ValueError:
        words = []
    path = Path(words[0]) if words else Path()
    if path.name != f"{job_id}.SC" or os.path.realpath(path.parent) != os.path.realpath(jobs):
        raise NotABatchJob("cbatch-starter must be started by pbs_mom as an OpenPBS job "
                            "(stdin does not name this job's script)", stdin=line[:200])
    return path
