"""Resolve the host paths a job's container gets, at the same paths as on the host.

The job's own files (script, cwd, home, node files, TMPDIR) plus the site mounts the
policy granted, and /etc/passwd and /etc/group read-only. Anything the user could name
(TMPDIR) is mounted only after checks that it is theirs; nothing else from the host.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cbatch.errors import ContainerFailed, PolicyDenied
from cbatch.policy import Decision
from cbatch.torque import Job

NODE_FILES = ("PBS_NODEFILE", "PBS_GPUFILE", "PBS_MICFILE")
# A job's own folders (cwd, home, TMPDIR) never bring these into its container: the
# system's files, runtime sockets (the Docker socket lives under /run) and logs.
SYSTEM_TREES = tuple(Path(p) for p in (
    "/proc", "/sys", "/dev", "/run", "/var/run", "/etc", "/boot", "/usr", "/bin", "/sbin",
    "/lib", "/lib32", "/lib64", "/libx32", "/var/lib", "/var/log", "/var/cache", "/root"))
SYSTEM_ROOTS = (Path("/"), Path("/var"))
NSS_FILES = (Path("/etc/passwd"), Path("/etc/group"))


@dataclasses.dataclass(frozen=True, slots=True)
class Bind:
    source: Path
    target: Path
    read_only: bool


def resolve(job: Job, decision: Decision, torque_home: Path) -> tuple[Bind, ...]:
    """All bind mounts for the job, at most one per target, parents before children.

    Raises:
        ContainerFailed: a non-optional site folder is missing on this node.
    """
    binds: dict[Path, Bind] = {}

    def add(source: Path, target: Path, read_only: bool) -> None:
        binds[target] = Bind(source, target, read_only)

    for nss in NSS_FILES:
        add(nss, nss, True)  # read-only: the job must not edit the host's accounts
    for mount in decision.site_mounts:
        if mount.path.exists():
            add(mount.path, mount.target, mount.read_only)
        elif not mount.optional:
            raise ContainerFailed(f"the site folder {mount.path} is missing on this node; "
                                  "the job can be requeued elsewhere", path=str(mount.path))
    home = Path(os.path.realpath(job.home))
    if home.is_dir() and is_job_path(home, decision.workdir_roots, torque_home):
        add(home, job.home, False)
    cwd = Path(os.path.realpath(job.cwd))
    if not is_job_path(cwd, decision.workdir_roots, torque_home):
        roots = ", ".join(str(r) for r in decision.workdir_roots)
        raise PolicyDenied(f"the job's working directory {job.cwd} cannot be used in its "
                           f"container; submit from a directory under {roots} (not a system "
                           "folder)", cwd=str(job.cwd))
    if cwd.is_dir() and not _inside(cwd, binds):
        add(cwd, job.cwd, False)
    aux = Path(os.path.realpath(torque_home / "aux"))
    for name in NODE_FILES:
        path = job.env.get(name)
        if path and Path(os.path.realpath(path)).parent == aux and Path(path).is_file():
            add(Path(os.path.realpath(path)), Path(os.path.normpath(path)), True)
    tmpdir = _own_tmpdir(job)
    if tmpdir and is_job_path(tmpdir, decision.workdir_roots, torque_home) \
            and not _inside(tmpdir, binds):
        add(tmpdir, tmpdir, False)
    if job.script is not None:
        add(job.script, job.script, True)  # read-only: the job runs it, never edits it
    return tuple(sorted(binds.values(), key=lambda b: (len(b.target.parts), str(b.target))))


def is_job_path(path: Path, roots: tuple[Path, ...], torque_home: Path) -> bool:
    """May a job's own folder (resolved) be bind-mounted into its container?"""
    if path in SYSTEM_ROOTS or not any(path == r or r in path.parents for r in roots):
        return False
    forbidden = (*SYSTEM_TREES, Path(os.path.realpath(torque_home)))
    return not any(path == t or t in path.parents for t in forbidden)


def _inside(path: Path, binds: dict[Path, Bind]) -> bool:
    """True when a read-write bind already covers path."""
    return any(not b.read_only and (path == t or t in path.parents) for t, b in binds.items())


def _own_tmpdir(job: Job) -> Path | None:
    """TMPDIR if it is a real (non-symlinked) directory owned by the job's user.

    Users can set TMPDIR with qsub -v, so it is mounted only when it is theirs: a bind
    mount would otherwise expose a path their uid could not even reach.
    """
    value = job.env.get("TMPDIR")
    if not value or not value.startswith("/"):
        return None
    path = Path(os.path.normpath(value))
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if os.path.realpath(path) != str(path) or st.st_uid != job.uid or not path.is_dir():
        return None
    return path
