"""The batch system a node serves, behind one small interface: prove a peer is one of its
jobs (verify -> Job) and read the job's own record (record -> Record).

Each batch system is one module here, named by `batch.system` in /etc/cbatch.yaml
(torque.py, openpbs.py); a module whose name is a plain lowercase word and that defines
`verify` and `record` is a system, so a new one (PBS Professional) is a new file. Helpers
for several systems have compound names (proc_facts.py, torque_records.py). Nothing here
imports a system's module until the daemon asks for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import stat
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cbatch import peer as peer_
    from cbatch.config import Config

_NAME = re.compile(r"^[a-z][a-z0-9]*$")


def read_root_record(path: Path, limit: int) -> tuple[bytes, str | None]:
    """A mom's record of a job: (its bytes, None), or (b"", why it may not be trusted).

    It must be a regular file (no symlink followed) that only root may write, of at most
    `limit` bytes: the job's owner must not be able to steer policy through it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return b"", f"cannot open {path.name}: {exc.strerror}"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return b"", f"{path.name} is not a regular file only root may write"
        data = f.read(limit + 1)
    if len(data) > limit:
        return b"", f"{path.name} is larger than {limit} bytes"
    return data, None


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One job task as the batch system's mom started it, proven from the kernel and the
    batch system's own files."""

    job_id: str  # PBS_JOBID, e.g. "2[1].vm"
    prefix: str  # the job's file prefix in mom_priv/jobs, e.g. Torque's "2-1.vm"
    task: int  # PBS_TASKNUM: 1 for the job's top task, >1 for TM tasks (pbsdsh, mpiexec)
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path
    cwd: Path
    umask: int
    env: dict[str, str]
    argv: tuple[str, ...]  # what the mom (or its hook) passed after the starter's own name
    stdin: bytes  # what the mom wrote on the starter's stdin
    script: Path | None  # mom_priv/jobs/<prefix>.SC; an interactive job may have none
    script_text: str
    queue: str  # from the mom's record of the job; "" when unknown
    rlimits: dict[str, tuple[int, int]]  # docker ulimit name -> (soft, hard); -1 = unlimited
    peer: peer_.Peer
    interactive: bool = False  # qsub -I: the starter's fds 0-2 are the job's terminal
    slots: int = 1  # processors the job was given on this node (the mom's record)
    record_problem: str | None = None  # why the mom's record gave no queue or slots
    direct: bool = False  # argv is the job's own command (OpenPBS `qsub -- cmd`), no shell
    sigpipe_ignored: bool = True  # Torque's pbs_mom starts jobs with SIGPIPE ignored;
    # OpenPBS's with its default action

    @property
    def container_name(self) -> str:
        name = "cbatch-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in self.prefix)
        return name if self.task <= 1 else f"{name}-t{self.task}"


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """What the batch system itself recorded about a job on this node."""

    queue: str  # "" when unknown
    slots: int  # processors given on this node; 1 when unknown
    problem: str | None = None  # why the record was not used, for the daemon's log
    owner: str = ""  # the job's user, "" when unknown
    hosts: tuple[str, ...] = ()  # the job's nodes, mother superior first


def is_system(name: str) -> bool:
    """Whether `name` names a batch system module here (for config validation)."""
    return bool(_NAME.match(name)) and (Path(__file__).parent / f"{name}.py").is_file()


def system(cfg: Config) -> ModuleType:
    """The module of the batch system this node serves."""
    return importlib.import_module(f"{__name__}.{cfg.batch_system}")


def verify(cfg: Config, peer: peer_.Peer, argv: list[str], stdin: bytes, tty: bool = False,
           **kwargs) -> Job:
    """Prove the peer is a live job task of peer.uid in this node's batch system.

    Raises:
        NotABatchJob: the peer is not (or no longer) a job the mom started for that uid.
        PolicyDenied: root or system-uid jobs when the policy does not allow them.
    """
    return system(cfg).verify(cfg, peer, argv, stdin, tty=tty, **kwargs)


def record(cfg: Config, job_id: str) -> Record:
    """The batch system's own record of a job on this node (queue, slots, owner, hosts)."""
    return system(cfg).record(cfg, job_id)
