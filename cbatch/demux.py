"""Split Docker's multiplexed attach stream into the job's stdout and stderr.

Each Docker frame is an 8-byte header (stream number, three zero bytes, big-endian size)
and that many bytes; a container with a terminal (interactive jobs) sends its bytes
as they are. A message from docker-init on stderr means the job's command could
not even be executed; it is kept apart instead of reaching the job's error file.
"""

from __future__ import annotations

import socket
import struct
from typing import Callable

HEADER = struct.Struct(">BxxxI")
INIT_FAILURE = (b"[FATAL tini", b"cbatch-keeper: exec")  # the job's command did not start
STDOUT, STDERR = 1, 2


def pump(attach: socket.socket, emit: Callable[[int, bytes], bool]) -> str | None:
    """Copy frames to emit(stream, data) until EOF or until emit returns False.

    Returns docker-init's failure message, if it printed one. Raises OSError when the
    stream breaks.
    """
    init_failure: str | None = None
    while True:
        head = _read_exact(attach, HEADER.size)
        if not head:
            return init_failure
        stream, size = HEADER.unpack(head)
        data = _read_exact(attach, size)
        if stream == STDERR and (init_failure is not None or data.startswith(INIT_FAILURE)):
            # the message may come in several writes; the job itself never ran
            init_failure = ((init_failure or "") + data.decode("utf-8", "replace"))[:4096]
            continue
        if stream in (STDOUT, STDERR) and not emit(stream, data):
            return init_failure


def pump_terminal(attach: socket.socket, emit: Callable[[int, bytes], bool]) -> str | None:
    """pump() for a container's terminal: one stream of raw bytes, all of it stdout."""
    first = True
    while chunk := attach.recv(65536):
        if first and chunk.startswith(INIT_FAILURE):
            while more := attach.recv(65536):  # the rest of the message, up to the end
                chunk = (chunk + more)[:4096]
            return chunk.decode("utf-8", "replace")
        first = False
        if not emit(STDOUT, chunk):
            return None
    return None


def _read_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return bytes(buf)
