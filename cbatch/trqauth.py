"""trqauthd for Torque's clients inside job containers.

qsub, qstat and qdel authenticate to pbs_server through trqauthd's Unix socket: the
client writes its user name and its pid, and trqauthd vouches for it only when the
socket's kernel credentials (SO_PEERCRED) show that user's uid and that very pid. In a
container the client writes its pid in the container's pid namespace, which never equals
the host pid trqauthd sees, so it is refused.

So a container's trqauthd socket is this relay's. For each connection it reads the peer's
credentials, checks that the pid the client wrote is the peer's own pid in the peer's
namespace (the check trqauthd makes natively), and passes the request to trqauthd over a
connection that a short-lived process running as the peer's uid opened, naming that
process's pid. trqauthd still makes every decision: it sees the same user, the same
request and a pid that is the connection's. Requests whose user or pid do not check out
go to trqauthd unchanged, and it refuses them as it refuses them natively.

Wire format (Torque's trq_auth.c): numbers as "<digits>|", strings as "<len>|<bytes>|";
an authentication request is "1|" server port auth_type user pid client_port, the other
requests (2, 3, 5) are their number alone, 4 (stop trqauthd) is followed by user and pid.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

from cbatch import peer, server

TRQAUTHD_SOCKET = Path("/tmp/trqauthd-unix")  # compiled into Torque's clients and trqauthd
SOCKET_NAME = "trqauthd-unix"
AUTH_CONNECTION = 1
_FIELDS = {1: "snnsnn", 2: "", 3: "", 4: "sn", 5: ""}  # per request type, after its number
_PID_FIELD = {1: 4, 4: 1}  # which field is the client's pid
_USER_FIELD = {1: 3, 4: 0}
MAX_REQUEST = 4096
TIMEOUT_S = 10.0
MAX_RELAYS = 32  # at once; more wait for a slot
SOCKET_FAULT = 15096  # Torque's PBSE_SOCKET_FAULT: "Unable to get connection to socket"
_CONTAINER_ID = re.compile(rb"[0-9a-f]{64}")

# Run as the peer's uid: connect to trqauthd, hand the connection back on fd 0.
_CONNECT = ("import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)\n"
            "s.connect(sys.argv[1])\n"
            "socket.send_fds(socket.socket(fileno=0),[b'.'],[s.fileno()])\n")


class Incomplete(Exception):
    """More bytes are needed for the request."""


def parse(buf: bytes) -> tuple[int, list[bytes | int], int]:
    """(request type, its fields, bytes used) of a complete request at buf's start.

    Raises Incomplete when buf ends early and ValueError when it is not a request.
    """
    fields: list[bytes | int] = []
    kind, at = _number(buf, 0)
    for shape in _FIELDS.get(kind, ""):
        value, at = _number(buf, at)
        if shape == "s":
            if not 0 <= value <= MAX_REQUEST:
                raise ValueError("string length out of range")
            if len(buf) < at + value + 1:
                raise Incomplete()
            if buf[at + value:at + value + 1] != b"|":
                raise ValueError("string not followed by |")
            fields.append(buf[at:at + value])
            at += value + 1
        else:
            fields.append(value)
    return kind, fields, at


def _number(buf: bytes, at: int) -> tuple[int, int]:
    end = buf.find(b"|", at)
    if end < 0:
        if len(buf) - at > 20:
            raise ValueError("number too long")
        raise Incomplete()
    return int(buf[at:end]), end + 1  # int() raises ValueError on anything but a number


def encode(kind: int, fields: list[bytes | int]) -> bytes:
    out = [f"{kind}|".encode()]
    for shape, value in zip(_FIELDS[kind], fields):
        if shape == "s":
            out.append(f"{len(value)}|".encode() + value + b"|")
        else:
            out.append(f"{value}|".encode())
    return b"".join(out)


def namespace_pid(host_pid: int) -> int | None:
    """The process's pid as it sees it (its innermost pid namespace's)."""
    try:
        with open(f"/proc/{host_pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def container_of(host_pid: int) -> str | None:
    """The short id of the container the process runs in (from its cgroups), if any."""
    try:
        with open(f"/proc/{host_pid}/cgroup", "rb") as f:
            found = _CONTAINER_ID.search(f.read())
    except OSError:
        return None
    return found.group().decode()[:12] if found else None


def rewrite(kind: int, fields: list[bytes | int], peer_pid: int, peer_uid: int,
            relay_pid: int) -> tuple[list[bytes | int], bool]:
    """The request to send in the relay connection's name, and whether it was vouched for.

    Only a request whose user is the peer's and whose pid is the peer's own (in its
    namespace) is given the relay connection's pid.
    """
    if kind not in _PID_FIELD:
        return fields, False
    try:
        name = pwd.getpwuid(peer_uid).pw_name.encode()
    except KeyError:
        return fields, False
    if fields[_USER_FIELD[kind]] != name or fields[_PID_FIELD[kind]] != namespace_pid(peer_pid):
        return fields, False
    fields = list(fields)
    fields[_PID_FIELD[kind]] = relay_pid
    return fields, True


def connect_as(uid: int, gid: int, path: Path) -> tuple[socket.socket, int]:
    """A connection to path opened by a process running as uid, and that process's pid."""
    ours, theirs = socket.socketpair()
    with ours:
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _CONNECT, str(path)], stdin=theirs,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, user=uid, group=gid,
                extra_groups=[], cwd="/", env={"LANG": "C"}, close_fds=True)
        ours.settimeout(TIMEOUT_S)
        try:
            _, fds, _, _ = socket.recv_fds(ours, 16, 1)
        finally:
            try:
                _, err = proc.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                err = b""
    if not fds:
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["no connection"]
        raise ConnectionError(f"cannot connect to {path}: {reason[0]}")
    return socket.socket(fileno=fds[0]), proc.pid


class Relay:
    """Listens on <folder>/trqauthd-unix, which every job's container sees as trqauthd's."""

    def __init__(self, folder: Path, log, trqauthd: Path = TRQAUTHD_SOCKET) -> None:
        self.folder = folder
        self.path = folder / SOCKET_NAME
        self.trqauthd = trqauthd
        self.log = log
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(folder, 0o755)  # containers mount the folder, so a restart's socket shows
        self.sock = server.bind(self.path, 0o666, None)  # as trqauthd's: any local user asks
        self._slots = threading.BoundedSemaphore(MAX_RELAYS)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="trqauth")

    def start(self) -> "Relay":
        self._thread.start()
        return self

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._slots.acquire()
            threading.Thread(target=self._relay, args=(conn,), daemon=True,
                             name="trqauth-relay").start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(TIMEOUT_S)
                self._answer(conn)
        except (OSError, ValueError) as exc:
            self.log.warning("trqauth_relay_failed", error=str(exc))
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> None:
        peer_pid, peer_uid, peer_gid = peer.ucred(conn)
        buf = b""
        while True:
            try:
                kind, fields, used = parse(buf)
                break
            except Incomplete:
                chunk = conn.recv(MAX_REQUEST)
                if not chunk or len(buf) >= MAX_REQUEST:
                    return
                buf += chunk
        try:
            upstream, relay_pid = connect_as(peer_uid, peer_gid, self.trqauthd)
        except (OSError, subprocess.SubprocessError) as exc:
            self.log.error("trqauthd_unreachable", uid=peer_uid, peer_pid=peer_pid,
                           container_id=container_of(peer_pid), socket=str(self.trqauthd),
                           error=str(exc))
            text = b"cbatch: trqauthd is not reachable on this node; tell your admin"
            conn.sendall(f"{SOCKET_FAULT}|{len(text)}|".encode() + text + b"|")
            return
        with upstream:
            upstream.settimeout(TIMEOUT_S)
            request = buf
            if kind in _FIELDS:
                fields, vouched = rewrite(kind, fields, peer_pid, peer_uid, relay_pid)
                request = encode(kind, fields) + buf[used:]
                if kind == AUTH_CONNECTION:
                    self.log.info("trqauth_relayed", uid=peer_uid, peer_pid=peer_pid,
                                  container_id=container_of(peer_pid), vouched=vouched)
            upstream.sendall(request)
            while chunk := upstream.recv(65536):
                conn.sendall(chunk)

