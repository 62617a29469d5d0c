"""The retired Python cbatch-starter, kept only as the benchmark's baseline (bench/suite.py
runs it as it was installed: python3 -I). csrc/cbatch-starter.c replaced it.

Its docstring: what pbs_mom runs as the job (`$job_starter`). Standard library only.

It asks cbatchd to run the job in its container, copies the job's streamed output to its
own fds 1 and 2, relays the signals pbs_mom sends, and ends as the job ended: the same
exit code, or death by the same signal when the job died of a signal pbs_mom sent.
For an interactive job (qsub -I: fd 0 is the job's terminal) it puts that terminal in raw
mode and carries keystrokes and window sizes to the container's own terminal.
It never runs the job itself: without the daemon, the job does not run.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time

from cbatch import protocol

DEFAULT_SOCKET = "/run/cbatch/cbatchd.sock"
# Same numbers as cbatch.errors (which the starter must not import: it pulls in nothing
# but the standard library); a test keeps the two in step.
EXIT_NODE_FAILURE = 125
EXIT_REFUSED = 126
MAX_STDIN = 64 * 1024
RECONNECT_S = 120.0  # how long a running job waits for a restarting cbatchd
STDIN_TIMEOUT_S = 30.0


class StarterError(Exception):
    def __init__(self, message: str, status: int = EXIT_NODE_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def _read_stdin() -> bytes:
    """What pbs_mom wrote on stdin (the script line), up to EOF."""
    data = bytearray()
    selector = selectors.DefaultSelector()
    try:
        selector.register(0, selectors.EVENT_READ)
    except (ValueError, OSError, PermissionError):
        selector = None  # a regular file or /dev/null: reads never block
    while True:
        if selector is not None and not selector.select(timeout=STDIN_TIMEOUT_S):
            raise StarterError("the job's stdin was not closed by pbs_mom; the job did not run")
        try:
            chunk = os.read(0, 65536)
        except OSError:
            return bytes(data)  # stdin closed or not readable: nothing to pass on
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > MAX_STDIN:
            raise StarterError("the job's stdin is larger than cbatch accepts "
                               f"({MAX_STDIN} bytes)", EXIT_REFUSED)


def _connect() -> socket.socket:
    path = os.environ.get("CBATCH_SOCKET", DEFAULT_SOCKET)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise StarterError(f"cannot reach cbatchd on {os.uname().nodename} ({exc.strerror}); "
                           "the job did not run; it can be requeued, or tell your admin") from None
    uid = int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[4:8],
                         sys.byteorder)
    if uid != 0:  # only root's cbatchd may run jobs: never a daemon a user started
        sock.close()
        raise StarterError(f"the daemon on {path} is not run by root; the job did not run")
    return sock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BrokenPipeError:
            return  # the reader went away; the job's output has nowhere to go
        except InterruptedError:
            continue


def _std_fds() -> list[int]:
    fds = []
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return []
        fds.append(fd)
    return fds


def run(argv: list[str]) -> tuple[int, int | None, str | None]:
    """Run the job; (exit status, signal to die of or None, message for stderr or None)."""
    if not argv:
        raise StarterError("cbatch-starter runs as Torque's $job_starter and needs the "
                           "job's shell as its argument", EXIT_REFUSED)
    tty = os.isatty(0)
    stdin = b"" if tty else _read_stdin()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    for signum in (*protocol.RELAYED_SIGNALS, *((signal.SIGWINCH,) if tty else ())):
        signal.signal(signum, lambda *_: None)  # only record: the loop relays
    sock = _connect()
    try:
        protocol.send(sock, protocol.KIND_REQUEST, stdin, fds=[] if tty else _std_fds(),
                      v=protocol.VERSION, argv=argv, tty=tty, winsize=_winsize(tty))
    except OSError as exc:
        raise StarterError(f"lost the connection to cbatchd ({exc}); the job did not run") from None
    if tty:
        _raw_terminal()
    keys = bytearray()  # typed but not yet delivered: kept across a daemon restart
    while True:
        try:
            return _follow(sock, wake_r, tty, keys)
        except _Disconnected:
            sock.close()
            sock = _reconnect(argv, stdin, tty)


_restore_terminal = None  # set while the interactive job's terminal is in raw mode


def _raw_terminal() -> None:
    """Keystrokes go to the container's terminal as typed: ^C, ^Z, echo are its business."""
    global _restore_terminal
    import termios
    import tty as tty_
    saved = termios.tcgetattr(0)
    tty_.setraw(0, termios.TCSADRAIN)
    _restore_terminal = lambda: termios.tcsetattr(0, termios.TCSADRAIN, saved)  # noqa: E731


def _winsize(tty: bool) -> list[int] | None:
    if not tty:
        return None
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return None
    return [size.lines, size.columns] if size.lines and size.columns else None  # 0: unset


class _Disconnected(Exception):
    pass


def _reconnect(argv: list[str], stdin: bytes, tty: bool) -> socket.socket:
    """The daemon restarted under a running job: wait for it and ask to resume."""
    try:
        patience = float(os.environ.get("CBATCH_RECONNECT_S", RECONNECT_S))
    except ValueError:
        patience = RECONNECT_S
    deadline = time.monotonic() + patience
    while True:
        try:
            sock = _connect()
            protocol.send(sock, protocol.KIND_REQUEST, stdin, v=protocol.VERSION, argv=argv,
                          tty=tty, winsize=_winsize(tty), resume=True)
            return sock
        except (StarterError, OSError):
            if time.monotonic() > deadline:
                raise StarterError("lost the connection to cbatchd while the job ran and it "
                                   f"did not come back within {patience:.0f} s; the job's end "
                                   "is unknown; tell your admin") from None
            time.sleep(0.25)


def _follow(sock: socket.socket, wake_r: socket.socket, tty: bool,
            keys: bytearray) -> tuple[int, int | None, str | None]:
    """Copy output (and keystrokes) and relay signals until the daemon reports the end."""
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "daemon")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    if tty:
        selector.register(0, selectors.EVENT_READ, "keys")
        _send_keys(sock, keys)
    while True:
        for key, _ in selector.select():
            if key.data == "signal":
                for signum in wake_r.recv(256):
                    if signum == signal.SIGWINCH:
                        _send_quietly(sock, protocol.KIND_RESIZE, winsize=_winsize(tty))
                    else:
                        _send_quietly(sock, protocol.KIND_SIGNAL, signal=signum)
                continue
            if key.data == "keys":
                try:
                    typed = os.read(0, 4096)
                except OSError:
                    typed = b""  # EIO: the terminal hung up; its SIGHUP is relayed
                if not typed:
                    selector.unregister(0)
                keys += typed
                _send_keys(sock, keys)
                continue
            try:
                header, payload = protocol.recv(sock)
            except (protocol.PeerClosed, protocol.FrameError, OSError):
                raise _Disconnected() from None
            kind = header.get("t")
            if kind == protocol.KIND_STDOUT:
                _write_all(1, payload)
            elif kind == protocol.KIND_STDERR:
                _write_all(2, payload)
            elif kind == protocol.KIND_EXIT:
                return int(header.get("status", EXIT_NODE_FAILURE)), header.get("signal"), \
                    header.get("message")
            elif kind == protocol.KIND_ERROR:
                raise StarterError(str(header.get("message", "cbatchd refused the job")),
                                   int(header.get("status", EXIT_NODE_FAILURE)))


def _send_keys(sock: socket.socket, keys: bytearray) -> None:
    """Deliver what was typed; on a lost connection it waits for the next daemon."""
    if not keys:
        return
    try:
        protocol.send(sock, protocol.KIND_INPUT, bytes(keys))
    except OSError:
        raise _Disconnected() from None
    keys.clear()


def _send_quietly(sock: socket.socket, kind: str, payload: bytes = b"", **fields) -> None:
    try:
        protocol.send(sock, kind, payload, **fields)
    except OSError:
        pass  # the daemon's end is reported by the read side


def main() -> None:
    try:
        status, signum, message = run(sys.argv[1:])
    except StarterError as exc:
        status, signum, message = exc.status, None, str(exc)
    except Exception as exc:  # never a traceback in the user's .e file
        status, signum, message = EXIT_NODE_FAILURE, None, f"cbatch-starter failed: {exc!r}"
    if _restore_terminal is not None:
        try:
            _restore_terminal()
        except OSError:
            pass  # the terminal is gone
    if message:
        _write_all(2, f"cbatch: {message}\n".encode())
    if isinstance(signum, int) and 0 < signum < signal.NSIG:
        # the job died of a signal pbs_mom sent: die of it too, so Torque records 256+N
        signal.set_wakeup_fd(-1)
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
    os._exit(status & 0xFF)


if __name__ == "__main__":
    main()
