"""Resolve the host paths a job's container gets, at the same paths as on the host.

The job's own files (script, cwd, home, node files, TMPDIR) plus the site mounts the
policy granted, and /etc/passwd and /etc/group read-only. The job's own paths are opened
once as its uid would reach them and mounted from that descriptor, never by a name a user
could swap; TMPDIR (the user can name it) only when it is theirs; nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Callable

from cbatch import opener, placeholders
from cbatch.container import Bind
from cbatch.errors import MountFailed, NodeIncomplete, PolicyDenied
from cbatch.policy import Decision, check_workdir, is_job_path
from cbatch.batch import Job

NODE_FILES = ("PBS_NODEFILE", "PBS_GPUFILE", "PBS_MICFILE")
NSS_FILES = (Path("/etc/passwd"), Path("/etc/group"))


@dataclasses.dataclass
class Mounts:
    """A job's binds. Its own paths are held open (`fds`, by target) from the checks
    until its container has started, and Docker gets them through placeholders."""

    binds: tuple[Bind, ...]
    fds: dict[Path, int]
    placeholders: list[Path] = dataclasses.field(default_factory=list)

    def pin(self, run_dir: Path, name: str) -> None:
        """Mount each held path onto a placeholder; the binds then name the placeholders.

        Raises:
            MountFailed: a placeholder could not be mounted (node-side).
        """
        pinned = []
        for index, bind in enumerate(self.binds):
            fd = self.fds.get(bind.target)
            if fd is None:
                pinned.append(bind)
                continue
            placeholder = run_dir / f"{name}.m{index}"
            if not placeholders.mount(fd, placeholder, stat.S_ISDIR(os.fstat(fd).st_mode)):
                raise MountFailed(f"cbatch could not prepare {bind.target} for the job's "
                                  "container on this node; the job did not run; it can "
                                  "be requeued", path=str(bind.target))
            self.placeholders.append(placeholder)
            pinned.append(Bind(placeholder, bind.target, bind.read_only))
        self.binds = tuple(pinned)

    def release(self) -> None:
        """Drop placeholders and descriptors (a started container keeps its mounts)."""
        for placeholder in self.placeholders:
            placeholders.unmount(placeholder)
        self.placeholders.clear()
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def resolve(job: Job, decision: Decision, pbs_home: Path) -> Mounts:
    """All bind mounts for the job, at most one per target, parents before children.

    The job's own paths are opened here once, as its uid would reach them (opener.py);
    Mounts.pin then hands Docker those very objects, so no name can be swapped between
    this check and the mount.

    Raises:
        NodeIncomplete: a non-optional site folder is missing on this node.
        PolicyDenied: the working directory is a system folder or not reachable as
            the job's own plain folder.
    """
    who = opener.Who(job.uid, (job.gid, *job.groups))
    binds: dict[Path, Bind] = {}
    fds: dict[Path, int] = {}

    def add(source: Path, target: Path, read_only: bool, fd: int | None = None) -> None:
        if target in fds:
            os.close(fds.pop(target))
        binds[target] = Bind(source, target, read_only)
        if fd is not None:
            fds[target] = fd

    try:
        for nss in NSS_FILES:
            add(nss, nss, True)  # read-only: the job must not edit the host's accounts
        for mount in decision.site_mounts:  # the admin's paths: no user can swap them
            if mount.path.exists():
                add(mount.path, mount.target, mount.read_only)
            elif not mount.optional:
                raise NodeIncomplete(f"the site folder {mount.path} is missing on this "
                                     "node; the job can be requeued elsewhere",
                                     path=str(mount.path))
        # the home's path is the admin's (passwd): its symlinks are followed, each step
        # checked as the job's uid
        home = _open(job.home, who, directory=True, follow=True)
        if home and is_job_path(home.path, decision.workdir_roots, pbs_home):
            add(home.path, job.home, False, home.fd)
        elif home:
            os.close(home.fd)
        _add_cwd(job, decision, pbs_home, who, binds, add)
        aux = Path(os.path.realpath(pbs_home / "aux"))
        for name in NODE_FILES:
            path = job.env.get(name)
            node_file = _open(path, who, directory=False, follow=True) if path else None
            if node_file and node_file.path.parent == aux:
                add(node_file.path, Path(os.path.normpath(path)), True, node_file.fd)
            elif node_file:
                os.close(node_file.fd)
        tmpdir = _own_tmpdir(job, who)
        if tmpdir and is_job_path(tmpdir.path, decision.workdir_roots, pbs_home) \
                and not _inside(tmpdir.path, binds):
            add(tmpdir.path, tmpdir.path, False, tmpdir.fd)
        elif tmpdir:
            os.close(tmpdir.fd)
        if job.script is not None:  # torque.verify opened it: in mom_priv/jobs, root's
            add(job.script, job.script, True)  # read-only: the job runs it, never edits it
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    ordered = sorted(binds.values(), key=lambda b: (len(b.target.parts), str(b.target)))
    return Mounts(tuple(ordered), fds)


def _add_cwd(job: Job, decision: Decision, pbs_home: Path, who: opener.Who,
             binds: dict[Path, Bind], add: Callable[..., None]) -> None:
    """Mount the working directory (a kernel-given path: no symlink, no '..') unless a
    read-write mount covers it. A symlink met on the way means it was swapped."""
    check_workdir(job.cwd, decision, pbs_home)
    cwd = Path(os.path.normpath(job.cwd))
    if _inside(cwd, binds):
        return
    try:
        opened = opener.reach(cwd, who, directory=True)
    except opener.Unreachable as exc:
        if exc.missing:  # removed since the job started: it runs in the image's folder
            return
        raise PolicyDenied(f"the job's working directory {job.cwd} cannot be used in its "
                           f"container ({exc.reason}); submit from a plain folder of yours "
                           "and leave it in place until the job has started",
                           cwd=str(job.cwd), reason=exc.reason) from None
    add(opened.path, job.cwd, False, opened.fd)


def _open(path: str | Path, who: opener.Who, directory: bool,
          follow: bool = False) -> opener.Opened | None:
    try:
        return opener.reach(path, who, directory, follow)
    except opener.Unreachable:
        return None


def _inside(path: Path, binds: dict[Path, Bind]) -> bool:
    """True when a read-write bind already covers path."""
    return any(not b.read_only and (path == t or t in path.parents) for t, b in binds.items())


def _own_tmpdir(job: Job, who: opener.Who) -> opener.Opened | None:
    """TMPDIR, opened, if it is a real directory (no symlink, no '..') owned by the job's
    user.

    Users can set TMPDIR with qsub -v, so it is mounted only when it is theirs: a bind
    mount would otherwise expose a path their uid could not even reach.
    """
    value = job.env.get("TMPDIR")
    if not value or not value.startswith("/") or ".." in value.split("/"):
        return None
    opened = _open(value, who, directory=True)
    if opened and opened.st.st_uid != job.uid:
        os.close(opened.fd)
        return None
    return opened
