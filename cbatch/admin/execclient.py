"""`cbatch exec`, the user's side: a command or shell in one's own running job.

Runs as any user: the daemon learns who asks from the kernel (SO_PEERCRED). On a
terminal, the local one goes raw and its size follows the window; the command's exit
status becomes this program's.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import tty as tty_
from pathlib import Path

from cbatch import protocol
from cbatch.errors import EXIT_NODE_FAILURE, CbatchError, DaemonRefused, DaemonUnreachable

# A login shell of the job's user, the job's $SHELL when the image has it.
SHELL = ["/bin/sh", "-c", 'if [ -x "$SHELL" ]; then exec "$SHELL" -l; fi; exec /bin/sh -l']


def run(socket_path: Path, job_id: str, argv: list[str]) -> int:
    on_tty = os.isatty(0) and os.isatty(1)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(str(socket_path))
    except OSError as exc:
        sock.close()
        raise DaemonUnreachable(f"cannot reach cbatchd at {socket_path} ({exc.strerror}); is this "
                          "the node the job runs on?") from exc
    with sock:
        protocol.send(sock, protocol.KIND_EXEC, v=protocol.VERSION, job_id=job_id,
                      argv=argv or SHELL, tty=on_tty, winsize=_winsize() if on_tty else None)
        saved = termios.tcgetattr(0) if on_tty else None
        if saved is not None:
            tty_.setraw(0)
        try:
            return _relay(sock, on_tty)
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _relay(sock: socket.socket, on_tty: bool) -> int:
    wake_r, wake_w = socket.socketpair()
    for end in (wake_r, wake_w):
        end.setblocking(False)
    previous = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)
    selector = selectors.PollSelector()  # poll, unlike epoll, takes a file or /dev/null
    selector.register(sock, selectors.EVENT_READ, "daemon")
    try:
        selector.register(0, selectors.EVENT_READ, "stdin")
    except (OSError, ValueError):  # no stdin at all: the command reads end of input
        protocol.send(sock, protocol.KIND_INPUT, eof=True)
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "signal":
                    if signal.SIGWINCH in wake_r.recv(64) and on_tty:
                        protocol.send(sock, protocol.KIND_RESIZE, winsize=_winsize())
                elif key.data == "stdin":
                    data = os.read(0, 65536)
                    if data:
                        protocol.send(sock, protocol.KIND_INPUT, data)
                    else:
                        selector.unregister(0)
                        protocol.send(sock, protocol.KIND_INPUT, eof=True)
                else:
                    status = _frame(sock)
                    if status is not None:
                        return status
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        signal.set_wakeup_fd(previous)
        selector.close()
        wake_r.close()
        wake_w.close()


def _frame(sock: socket.socket) -> int | None:
    """Handle one frame from the daemon; the exit status once the command has ended."""
    try:
        header, payload = protocol.recv(sock)
    except (protocol.PeerClosed, protocol.FrameError, OSError) as exc:
        raise DaemonUnreachable(f"cbatchd ended the connection ({exc or 'closed'}); the command's "
                          "end is unknown") from exc
    kind = header.get("t")
    if kind in (protocol.KIND_STDOUT, protocol.KIND_STDERR):
        _write(1 if kind == protocol.KIND_STDOUT else 2, payload)
    elif kind == protocol.KIND_EXIT:
        return int(header.get("status", EXIT_NODE_FAILURE))
    elif kind == protocol.KIND_ERROR:
        raise DaemonRefused(str(header.get("message")), int(header.get("status", EXIT_NODE_FAILURE)))
    return None


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _winsize() -> list[int]:
    rows, cols, _, _ = struct.unpack("4H", fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8))
    return [rows or 24, cols or 80]


def main_exit(exc: CbatchError) -> int:
    """The exit status for a failed exec: the daemon's when it refused, else node failure."""
    print(f"cbatch: {exc}", file=sys.stderr)
    return getattr(exc, "exit_status", EXIT_NODE_FAILURE)
