"""Who is on the other end of a Unix socket, from the kernel alone (SO_PEERCRED, /proc)."""

from __future__ import annotations

import dataclasses
import socket
import struct
from pathlib import Path

PROC = Path("/proc")
_UCRED = struct.Struct("3i")


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    start_ticks: int  # /proc/<pid>/stat starttime: tells a pid apart from a reused one


@dataclasses.dataclass(frozen=True, slots=True)
class ProcStat:
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    tty_nr: int
    start_ticks: int


def ucred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the connected peer, as the kernel recorded them."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def credentials(sock: socket.socket, proc: Path = PROC) -> Peer:
    """The connected peer's pid/uid/gid and supplementary groups.

    Raises OSError when the peer process is already gone.
    """
    pid, uid, gid = ucred(sock)
    groups = status_field(pid, "Groups", proc).split()
    return Peer(pid, uid, gid, tuple(int(g) for g in groups), stat(pid, proc).start_ticks)


def stat(pid: int, proc: Path = PROC) -> ProcStat:
    """Parse /proc/<pid>/stat (comm may contain spaces and parentheses)."""
    raw = (proc / str(pid) / "stat").read_text()
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2:].split()
    return ProcStat(comm=comm, state=rest[0], ppid=int(rest[1]), pgrp=int(rest[2]),
                    session=int(rest[3]), tty_nr=int(rest[4]), start_ticks=int(rest[19]))


def status_field(pid: int, name: str, proc: Path = PROC) -> str:
    """One field of /proc/<pid>/status, e.g. "Groups" or "Umask"."""
    for line in (proc / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise KeyError(name)


def is_alive(pid: int, start_ticks: int, proc: Path = PROC) -> bool:
    """True while the very process (not a reused pid) exists and is not a zombie."""
    try:
        st = stat(pid, proc)
    except (OSError, ValueError):
        return False
    return st.start_ticks == start_ticks and st.state not in ("Z", "X")
