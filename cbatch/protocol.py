"""Wire format between cbatch-starter, cbatchd and the admin CLI (standard library only).

Every message is one frame::

    +----------------+-----------------+------------------+-------------------+
    | header_len u32 | payload_len u32 | header (JSON)    | payload (raw)     |
    | big endian     | big endian      | header_len bytes | payload_len bytes |
    +----------------+-----------------+------------------+-------------------+

The header is a JSON object whose "t" names the kind (the KIND_* constants). Output and
stdin bytes travel as the raw payload, never inside JSON. File descriptors (the job's
stdout/stderr) ride along a REQUEST frame as SCM_RIGHTS ancillary data.
Both lengths, the header's JSON nesting and the descriptors a frame may carry are bounded;
a peer that sends more is a protocol error, not a reason to read (or hold fds) forever.
A job's first frame is checked once, into a Request (parse_request).
"""

from __future__ import annotations

import array
import dataclasses
import json
import os
import re
import signal
import socket
import struct
import time

from cbatch.errors import ProtocolError

VERSION = 1

KIND_REQUEST = "request"  # starter -> daemon: argv, tty, winsize, stdin bytes (payload), fds
KIND_STDOUT = "stdout"  # daemon -> starter: job output for fd 1 (payload)
KIND_STDERR = "stderr"  # daemon -> starter: job output for fd 2 (payload)
KIND_SIGNAL = "signal"  # starter -> daemon: {"signal": N} relayed from pbs_mom
KIND_INPUT = "input"  # starter -> daemon: keystrokes of an interactive job (payload)
KIND_RESIZE = "resize"  # starter -> daemon: {"winsize": [rows, cols]} of an interactive job
KIND_EXIT = "exit"  # daemon -> starter: {"status": N, "signal": N|null}
KIND_ERROR = "error"  # daemon -> starter: {"message": str, "status": N}
KIND_ADMIN = "admin"  # admin CLI -> daemon: {"op": ...}
KIND_EXEC = "exec"  # cbatch exec -> daemon: {"v", "job_id", "argv", "tty", "winsize"}; then
#                     input (payload; {"eof": true} ends stdin), resize; back: output, exit
KIND_REPLY = "reply"  # daemon -> admin CLI: {"ok": bool, ...}

# The signals pbs_mom sends a job (qdel, walltime, qsig, suspend/resume) that the starter
# relays; SIGKILL and SIGSTOP cannot be caught, the daemon notices those by other means.
RELAYED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGQUIT, signal.SIGTSTP, signal.SIGCONT)

_PREFIX = struct.Struct(">II")
MAX_HEADER = 256 * 1024
MAX_PAYLOAD = 1024 * 1024
MAX_FDS = 2
MAX_DEPTH = 32  # JSON nesting of a header; real ones nest 3 deep at most
_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings skipped, brackets seen


class FrameError(ProtocolError):
    """The peer sent something that is not a valid frame."""


class PeerClosed(Exception):
    """The peer closed the connection cleanly between frames."""


def encode(kind: str, payload: bytes = b"", **fields: object) -> bytes:
    """One frame as bytes."""
    header = json.dumps({"t": kind, **fields}, separators=(",", ":")).encode()
    if len(header) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise FrameError(f"{kind} frame too large")
    return _PREFIX.pack(len(header), len(payload)) + header + payload


def send(sock: socket.socket, kind: str, payload: bytes = b"", fds: list[int] | None = None,
         **fields: object) -> None:
    """Send one frame; fds, if any, go as SCM_RIGHTS with its first byte."""
    data = encode(kind, payload, **fields)
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sent = sock.sendmsg([data], ancillary)
        data = data[sent:]
    if data:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int, fds: list[int] | None, started: bool,
                deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameError("the frame did not arrive in time")
            sock.settimeout(left)
        try:
            if fds is not None:
                chunk, ancdata, _flags, _addr = sock.recvmsg(
                    size - len(buf), socket.CMSG_SPACE(MAX_FDS * 4))
                _take_fds(ancdata, fds)
            else:
                chunk = sock.recv(size - len(buf))
        except socket.timeout:
            if deadline is not None:
                raise FrameError("the frame did not arrive in time") from None
            raise
        if not chunk:
            if not buf and not started:
                raise PeerClosed()
            raise FrameError("connection closed in the middle of a frame")
        buf += chunk
    return bytes(buf)


def _take_fds(ancdata: list, fds: list[int]) -> None:
    """Keep at most MAX_FDS descriptors per frame; close any beyond that at once.

    Each recvmsg may bring more, so they are counted as they arrive: a peer sending one
    byte at a time with two fds each must not fill the daemon's fd table before the
    frame ends.
    """
    received = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received.frombytes(data[: len(data) - len(data) % 4])
    room = max(0, MAX_FDS - len(fds))
    fds.extend(received[:room])
    for fd in received[room:]:
        os.close(fd)
    if len(received) > room:
        raise FrameError("too many file descriptors")


def _too_deep(raw: bytes) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    for match in _NESTING.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def recv(sock: socket.socket, fds: list[int] | None = None,
         timeout_s: float | None = None) -> tuple[dict, bytes]:
    """Read one frame: (header, payload).

    Pass a list as ``fds`` to accept SCM_RIGHTS descriptors (at most MAX_FDS); they are
    appended to it and belong to the caller. With ``timeout_s`` the whole frame must
    arrive within that time, however the peer paces its bytes. Raises PeerClosed at a
    clean end of stream, ProtocolError on anything malformed, oversized or late.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    previous = sock.gettimeout()
    try:
        prefix = _recv_exact(sock, _PREFIX.size, fds, False, deadline)
        header_len, payload_len = _PREFIX.unpack(prefix)
        if header_len > MAX_HEADER or payload_len > MAX_PAYLOAD:
            raise FrameError(f"frame too large ({header_len}+{payload_len} bytes)")
        raw = _recv_exact(sock, header_len, fds, True, deadline)
        payload = _recv_exact(sock, payload_len, fds, True, deadline) if payload_len else b""
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise FrameError(f"connection lost: {exc.strerror}") from exc
    finally:
        if deadline is not None:
            sock.settimeout(previous)
    if _too_deep(raw):
        raise FrameError(f"frame header nests deeper than {MAX_DEPTH} levels")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError("frame header is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise FrameError("frame header has no kind")
    return header, payload


MAX_ARGV = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A job's request as cbatch-starter sent it, checked once (parse_request)."""

    argv: tuple[str, ...]  # the shell and its arguments as pbs_mom passed them
    stdin: bytes  # what pbs_mom wrote on the starter's stdin
    tty: bool = False  # an interactive job: the starter's fds 0-2 are its terminal
    winsize: list[int] | None = None
    resume: bool = False  # the same starter again, after a daemon restart


def parse_request(header: dict, payload: bytes) -> Request:
    """The job's Request from its first frame.

    Raises:
        ProtocolError: the frame is not a valid request of this protocol version.
    """
    if header.get("t") != KIND_REQUEST:
        raise ProtocolError(f"expected a request, got {str(header.get('t'))[:40]!r}")
    version = header.get("v")
    if type(version) is not int:  # noqa: E721 - a bool or a string is no version
        raise ProtocolError("the request's protocol version is not a number; "
                            "cbatch-starter and cbatchd do not match: ask your admin to "
                            "install matching versions")
    if version != VERSION:
        raise ProtocolError(f"cbatch-starter speaks protocol {str(header.get('v'))[:20]}, "
                            f"cbatchd speaks {VERSION}; ask your admin to "
                            "install matching versions")
    argv = header.get("argv")
    if (not isinstance(argv, list) or not argv or len(argv) > MAX_ARGV
            or not all(isinstance(a, str) for a in argv)):
        raise ProtocolError("the request's argv is not a list of strings")
    if header.get("winsize") is not None and not is_winsize(header["winsize"]):
        raise ProtocolError("the request's winsize is not [rows, columns]")
    return Request(argv=tuple(argv), stdin=payload, tty=bool(header.get("tty")),
                   winsize=header.get("winsize"), resume=bool(header.get("resume")))


def is_winsize(value: object) -> bool:
    """[rows, columns] as a terminal reports them."""
    return (isinstance(value, list) and len(value) == 2
            and all(type(n) is int and 0 < n < 65536 for n in value))
