"""Who is on the other end of a Unix socket, from the kernel alone (SO_PEERCRED, /proc).

Read once, at accept (credentials), and carried with the connection from there on.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from pathlib import Path

PROC = Path("/proc")
_UCRED = struct.Struct("3i")


@dataclasses.dataclass(frozen=True, slots=True)
class ProcStat:
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    tty_nr: int
    start_ticks: int


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    start_ticks: int  # /proc/<pid>/stat starttime: tells a pid apart from a reused one
    stat: ProcStat | None = None  # as read at accept (describe); None: not read
    umask: int = 0o022


def ucred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the connected peer, as the kernel recorded them."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def credentials(sock: socket.socket, proc: Path = PROC) -> Peer:
    """The connected peer's pid/uid/gid and supplementary groups.

    Raises OSError when the peer process is already gone.
    """
    pid, uid, gid = ucred(sock)
    return describe(pid, uid, gid, proc)


def describe(pid: int, uid: int, gid: int, proc: Path = PROC) -> Peer:
    """The Peer of a process whose pid/uid/gid the kernel gave: one read of its
    /proc/<pid>/status (groups, umask) and one of its stat.

    Raises OSError (or ValueError) when the process is gone or its files are not the
    kernel's.
    """
    fields = _status(pid, proc)
    st = stat(pid, proc)
    groups = tuple(int(g) for g in fields.get("Groups", "").split())
    return Peer(pid, uid, gid, groups, st.start_ticks, st, int(fields.get("Umask", "0022"), 8))


def stat(pid: int, proc: Path = PROC) -> ProcStat:
    """Parse /proc/<pid>/stat (comm may contain spaces and parentheses)."""
    raw = (proc / str(pid) / "stat").read_text()
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2:].split()
    return ProcStat(comm=comm, state=rest[0], ppid=int(rest[1]), pgrp=int(rest[2]),
                    session=int(rest[3]), tty_nr=int(rest[4]), start_ticks=int(rest[19]))


def status_field(pid: int, name: str, proc: Path = PROC) -> str:
    """One field of /proc/<pid>/status, e.g. "Uid"."""
    try:
        return _status(pid, proc)[name]
    except KeyError:
        raise KeyError(name) from None


def _status(pid: int, proc: Path) -> dict[str, str]:
    fields = {}
    for line in (proc / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def is_alive(pid: int, start_ticks: int, proc: Path = PROC) -> bool:
    """True while the very process (not a reused pid) exists and is not a zombie."""
    try:
        st = stat(pid, proc)
    except (OSError, ValueError):
        return False
    return st.start_ticks == start_ticks and st.state not in ("Z", "X")
