"""Each job's /tmp and /var/tmp: one tmpfs of the admin's size, made and removed per job.

With the image root read-only (spec.py), these are the only places a job writes outside
its mounts, so what it writes there is bounded by `container.tmp_size` instead of landing
in /var/lib/docker. The daemon mounts the tmpfs on the host, in its own root-only
directory, with one world-writable (1777) folder for /tmp and one for /var/tmp sharing the
one bound; it can therefore measure the store after the job's end, whatever became of the
container, and unmount it when the session ends. tmpfs rather than a disk-backed store
(a loop file, overlay2 quotas): nothing to format or delete, no backing filesystem
features needed, freed on unmount. Its pages are memory, charged to the job's memory
cgroup (the job's memory limit covers them) and, up to the bound, to the node's RAM/swap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
from pathlib import Path

from cbatch import placeholders
from cbatch.container import Bind
from cbatch.errors import ContainerFailed

TARGETS = {"tmp": Path("/tmp"), "var-tmp": Path("/var/tmp")}
BYTES_PER_INODE = 8192  # files the store may hold: one per 8 KiB of its size (at least 1024)
_MS_NOSUID, _MS_NODEV = 2, 4
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclasses.dataclass
class Store:
    path: Path  # the tmpfs on the host
    size_bytes: int
    binds: tuple[Bind, ...]

    def full(self) -> str | None:
        """The job owner's line when the job filled its store (space or files), else None.

        Full means under 1 MiB (or 1/64 of the size) left, or no file slot left: what
        remains after a write failed with ENOSPC. A job that filled it and then deleted
        its files is not told (it saw the ENOSPC itself).
        """
        try:
            vfs = os.statvfs(self.path)
        except OSError:
            return None
        left = vfs.f_bavail * vfs.f_frsize
        where = " and ".join(str(t) for t in TARGETS.values())
        if left < min(2**20, self.size_bytes // 64):
            return (f"the job filled its {where} ({size_text(self.size_bytes)} limit on "
                    "this node); write large files to $TMPDIR or your working directory")
        if vfs.f_files and vfs.f_favail == 0:
            return (f"the job made too many files in its {where} ({vfs.f_files} at most on "
                    "this node); write them to $TMPDIR or your working directory")
        return None

    def remove(self) -> None:
        """Unmount the store: its contents go (a running container keeps its own mount)."""
        placeholders.unmount(self.path)


def make(run_dir: Path, name: str, size_bytes: int, taken: set[Path]) -> Store:
    """Mount a job's store; binds for the TARGETS the job's own mounts do not take.

    Raises:
        ContainerFailed: the tmpfs could not be mounted (node-side).
    """
    path = run_dir / f"{name}.tmp"
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        placeholders.unmount(path)  # a stale one of the same job (requeue)
        path.mkdir(mode=0o700)
    except OSError as exc:
        raise _failed(exc) from exc
    inodes = max(1024, size_bytes // BYTES_PER_INODE)
    options = f"size={size_bytes},nr_inodes={inodes},mode=0755".encode()
    if _libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                   options) != 0:
        err = ctypes.get_errno()
        placeholders.unmount(path)
        raise _failed(OSError(err, os.strerror(err)))
    binds = []
    try:
        for folder, target in TARGETS.items():
            (path / folder).mkdir()
            os.chmod(path / folder, 0o1777)  # as /tmp: everyone's, each their own files
            if target not in taken:
                binds.append(Bind(path / folder, target, False))
    except OSError as exc:
        placeholders.unmount(path)
        raise _failed(exc) from exc
    return Store(path, size_bytes, tuple(binds))


def size_text(size_bytes: int) -> str:
    """1073741824 -> "1 GiB"; 1536 MiB -> "1.5 GiB"."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.4g} {unit}"
    return f"{size_bytes} bytes"


def _failed(exc: OSError) -> ContainerFailed:
    return ContainerFailed("cbatch could not make the job's /tmp on this node; the job did "
                           "not run; it can be requeued", error=str(exc))
