"""Hand the job's own output files (the starter's fds 1 and 2) to its container.

When pbs_mom gave the starter a regular file (the spool .OU/.ER, a -k file, a final path),
the container appends to that very open file: the daemon bind-mounts the descriptor it
received over SCM_RIGHTS onto a placeholder in its own root-only directory, Docker mounts
the placeholder at the file's path, and the placeholder is unmounted once the container
has started. Output then flows at native speed, is never copied by a daemon, and survives
a daemon restart. /dev/null stays /dev/null; anything else (a pipe, a pty, a socket)
is streamed through the starter.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import stat
from pathlib import Path

from cbatch import placeholders as placeholders_
from cbatch.container import STREAM, SYSTEM_TREES, Bind, Output

# The target is the file's own path; a user who fakes it (ptrace, a private mount
# namespace) must not be able to lay a file over the image's system folders.
_FORBIDDEN = tuple(str(p) for p in SYSTEM_TREES)


@dataclasses.dataclass
class Plan:
    stdout: Output
    stderr: Output
    binds: tuple[Bind, ...]
    placeholders: list[Path]

    def release(self) -> None:
        """Drop the host-side placeholders (the container keeps its own mounts)."""
        for path in self.placeholders:
            placeholders_.unmount(path)
        self.placeholders.clear()


def plan(fds: list[int], name: str, run_dir: Path) -> Plan:
    """Decide per stream how output reaches the starter's file; mounts placeholders.

    fds are the starter's fds 1 and 2 as received; the caller keeps and closes them.
    """
    if len(fds) != 2:
        return Plan(STREAM, STREAM, (), [])
    outputs = [_classify(fd) for fd in fds]
    same = all(o.mode == "file" for o in outputs) and _same_file(*fds)
    binds, placeholders = [], []
    for number, (fd, out) in enumerate(zip(fds, outputs), start=1):
        if out.mode != "file" or (number == 2 and same):
            continue
        placeholder = run_dir / f"{name}.{number}"
        if not placeholders_.mount(fd, placeholder):
            outputs[number - 1] = STREAM
            continue
        placeholders.append(placeholder)
        binds.append(Bind(placeholder, out.path, False))
    if same and outputs[0].mode == "file":
        outputs[1] = Output("file", outputs[0].path, same_as_stdout=True)
    elif same:
        outputs[1] = STREAM
    return Plan(outputs[0], outputs[1], tuple(binds), placeholders)


def clean(run_dir: Path) -> int:
    """Remove placeholders a previous daemon left behind (at start); how many."""
    return placeholders_.clean(run_dir)


def _classify(fd: int) -> Output:
    try:
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat("/dev/null").st_rdev:
            return Output("null")
        writable = (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
        if not (stat.S_ISREG(st.st_mode) and writable):
            return STREAM
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return STREAM
    if (not path.startswith("/") or path.endswith(" (deleted)")
            or any(path == p or path.startswith(p + "/") for p in _FORBIDDEN)):
        return STREAM
    return Output("file", Path(path))


def _same_file(fd1: int, fd2: int) -> bool:
    a, b = os.fstat(fd1), os.fstat(fd2)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
