"""The daemon's Unix socket: safe bind, accept, one thread per connection.

The peer is read from the kernel once, at accept, and handed on with the connection.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Callable

from cbatch import peer


def bind(path: Path, mode: int, group: str | None) -> socket.socket:
    """Listen on path with the given mode and group.

    A stale socket from a previous daemon is replaced; anything else at that path
    (a file, a symlink, a directory) is refused rather than deleted.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket; refusing to replace it")
        path.unlink()
    # Bound under a private name, given its owner and mode, then renamed into place: the
    # socket appears at path complete (a starter or admin never meets it half-made).
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)  # never world-accessible before the chmod below
    try:
        sock.bind(str(staging))
    finally:
        os.umask(old)
    gid = grp.getgrnam(group).gr_gid if group else -1
    os.chown(staging, 0 if os.geteuid() == 0 else -1, gid)
    os.chmod(staging, mode)
    sock.listen(512)
    os.rename(staging, path)
    return sock


class Server:
    """Accepts connections and runs each in its own thread, bounded per uid and overall.

    The per-uid bound keeps one user (or a runaway loop of theirs) from exhausting the
    daemon's threads for everyone else's jobs; the overall bound keeps all of them within
    the daemon's open-file limit (nofile.py). The uid is the kernel's, read at accept.
    """

    def __init__(self, sock: socket.socket,
                 handle: Callable[[socket.socket, peer.Peer], None],
                 limits: Callable[[], tuple[int, int]],
                 refuse: Callable[[socket.socket, int, str], None]) -> None:
        self.sock = sock
        self.handle = handle
        self.limits = limits  # () -> (max per uid, max overall), read once per accept
        self.refuse = refuse
        self.per_uid: dict[int, int] = {}
        self.total = 0
        self.lock = threading.Lock()

    def accept_one(self) -> None:
        """Accept one connection. OSError from accept itself (EMFILE...) is the caller's."""
        conn, _ = self.sock.accept()
        try:
            who = peer.credentials(conn)
        except (OSError, ValueError):  # gone already: nobody to answer
            conn.close()
            return
        uid = who.uid
        per_uid, overall = self.limits()
        with self.lock:
            running = self.per_uid.get(uid, 0)
            crowded = ("too many connections from this uid" if running >= per_uid else
                       "too many connections on this node" if self.total >= overall else None)
            if crowded is None:
                self.per_uid[uid] = running + 1
                self.total += 1
        if crowded is not None:
            self.refuse(conn, uid, crowded)
            return
        try:
            threading.Thread(target=self._run, args=(conn, who), daemon=True,
                             name="session").start()
        except RuntimeError:  # no thread to be had: refuse rather than leak the slot
            self._release(uid)
            self.refuse(conn, uid, "no thread available")

    def _run(self, conn: socket.socket, who: peer.Peer) -> None:
        try:
            self.handle(conn, who)
        finally:
            self._release(who.uid)

    def _release(self, uid: int) -> None:
        with self.lock:
            self.total -= 1
            self.per_uid[uid] -= 1
            if not self.per_uid[uid]:
                del self.per_uid[uid]
