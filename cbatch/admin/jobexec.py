"""`cbatch exec`, the daemon's side: a command in a running job's container.

Only the job's owner (its uid, from SO_PEERCRED, as for jobs) and the node's admins may.
What runs takes its uid, gid, groups, environment and working directory from the job's
container, never from the request, and Docker applies the container's own hardening.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from cbatch import demux, peer, protocol
from cbatch.admin import ops
from cbatch.config import Config
from cbatch.container import Labels
from cbatch.engine import Engine
from cbatch.errors import EXIT_NODE_FAILURE, CbatchError, ExecRefused



def serve(conn: socket.socket, cfg: Config, who: peer.Peer, header: dict,
          engine_factory: Callable[[], Engine], log) -> None:
    """One `cbatch exec` connection of `who`, to its end. Refusals are answered and logged
    here."""
    conn.settimeout(None)  # a shell may sit idle for hours
    job_id = str(header.get("job_id", ""))[:64]
    log = log.bind(job_id=job_id, caller_uid=who.uid, peer_pid=who.pid)
    engine = engine_factory()
    try:
        argv, tty, winsize = _read(header)
        container = _target(engine, cfg, who, job_id)
    except ExecRefused as exc:
        log.warning("exec_refused", **exc.log_fields())
        _send(conn, protocol.KIND_ERROR, status=exc.exit_status, message=str(exc))
        return
    labels = Labels.of(container)
    state = engine.inspect(container["Id"])["Config"]
    log = log.bind(job_id=labels.job_id or None, user=labels.user or None,
                   uid=int(labels.uid or -1), container_id=container["Id"][:12])
    exec_id, stream = engine.exec_start(container["Id"], _sized(argv, winsize),
                                        state.get("User") or "",
                                        state.get("WorkingDir") or "", tty)
    log.info("exec_started", argv=argv[:8], tty=tty)
    started = time.monotonic()
    if winsize:
        _resize(engine, exec_id, winsize, log)
    status = _relay(conn, engine, exec_id, stream, tty, log)
    log.info("exec_finished", exit_status=status,
             duration_s=round(time.monotonic() - started, 3))


def _read(header: dict) -> tuple[list[str], bool, list[int] | None]:
    argv = header.get("argv")
    if (not isinstance(argv, list) or not argv or len(argv) > protocol.MAX_ARGV
            or not all(isinstance(a, str) for a in argv)):
        raise ExecRefused("exec: the command is not a list of words")
    if type(header.get("v")) is not int or header["v"] != protocol.VERSION:  # noqa: E721
        raise ExecRefused(f"exec: this cbatch speaks protocol {str(header.get('v'))[:20]}, "
                          f"cbatchd speaks {protocol.VERSION}; use the node's own cbatch")
    winsize = header.get("winsize")
    if winsize is not None and not protocol.is_winsize(winsize):
        raise ExecRefused("exec: the window size is not [rows, columns]")
    return argv, bool(header.get("tty")), winsize


def _sized(argv: list[str], winsize: list[int] | None) -> list[str]:
    """argv, on a terminal of the caller's size from its first instant.

    API 1.41 has no console size at exec creation, and a resize after the start races a
    quick command; so the terminal is sized before argv runs (when the image has stty;
    without it, the resize after the start still reaches a shell).
    """
    if not winsize:
        return argv
    return ["/bin/sh", "-c", 'stty rows "$1" cols "$2" 2>/dev/null; shift 2; exec "$@"',
            "cbatch-exec", str(winsize[0]), str(winsize[1]), *argv]


def _target(engine: Engine, cfg: Config, who: peer.Peer, job_id: str) -> dict:
    """The running container of job_id ("123" or "123.server") the caller may enter."""
    if not job_id:
        raise ExecRefused("exec: no job id given")
    found = [c for c in engine.containers() if c.get("State") == "running"
             and _names(job_id, Labels.of(c).job_id)]
    if not found:
        raise ExecRefused(f"no running job {job_id} on this node; `qstat -n {job_id}` "
                          "names the nodes it runs on")
    # the job's top task (the batch script's shell) before any TM task of the same job
    found.sort(key=lambda c: (Labels.of(c).task != "1", c["Created"]))
    container = found[0]
    owner = Labels.of(container).uid or None
    if owner != str(who.uid) and not ops.is_admin(cfg, who):
        raise ExecRefused(f"job {job_id} is not yours: only its owner and this node's admins "
                          "may run commands in it", owner_uid=owner,
                          container_id=container["Id"][:12])
    return container


def _names(asked: str, job_id: str) -> bool:
    """Does the id a user typed name this job? Torque ids carry the server's name."""
    return asked == job_id or asked == job_id.split(".", 1)[0]


def _relay(conn: socket.socket, engine: Engine, exec_id: str, stream: socket.socket,
           tty: bool, log) -> int:
    """Client frames to the command, its output back, until it ends; its exit status."""
    status: list[int] = []
    pump = threading.Thread(target=_pump, args=(conn, engine, exec_id, stream, tty, status),
                            daemon=True, name="exec-pump")
    pump.start()
    try:
        while True:
            try:
                header, payload = protocol.recv(conn)
            except (protocol.PeerClosed, protocol.FrameError, OSError):
                break  # the client left, or the pump closed the connection at the end
            kind = header.get("t")
            if kind == protocol.KIND_INPUT and header.get("eof"):
                _shutdown(stream, socket.SHUT_WR)  # the command reads end of input
            elif kind == protocol.KIND_INPUT and payload:
                try:
                    stream.sendall(payload)
                except OSError:
                    pass  # the command is gone; its end arrives through the pump
            elif kind == protocol.KIND_RESIZE and protocol.is_winsize(header.get("winsize")):
                _resize(engine, exec_id, header["winsize"], log)
    finally:
        _shutdown(stream, socket.SHUT_RDWR)  # a client gone: the command loses its terminal
        pump.join(10)
        stream.close()
    return status[0] if status else EXIT_NODE_FAILURE


def _pump(conn: socket.socket, engine: Engine, exec_id: str, stream: socket.socket,
          tty: bool, status: list[int]) -> None:
    kinds = {demux.STDOUT: protocol.KIND_STDOUT, demux.STDERR: protocol.KIND_STDERR}

    def emit(which: int, data: bytes) -> bool:
        return all(_send(conn, kinds[which], data[i:i + protocol.MAX_PAYLOAD])
                   for i in range(0, len(data), protocol.MAX_PAYLOAD))

    try:
        (demux.pump_terminal if tty else demux.pump)(stream, emit)
    except OSError:
        pass
    status.append(_exit_status(engine, exec_id))
    _send(conn, protocol.KIND_EXIT, status=status[0], signal=None)
    _shutdown(conn, socket.SHUT_RDWR)  # ends the reader in _relay


def _exit_status(engine: Engine, exec_id: str) -> int:
    """Docker reports the end of the stream a moment before the exec's exit code."""
    deadline = time.monotonic() + 5
    while True:
        try:
            status = engine.exec_status(exec_id)
        except CbatchError:
            return EXIT_NODE_FAILURE
        if status is not None or time.monotonic() > deadline:
            return EXIT_NODE_FAILURE if status is None else status
        time.sleep(0.02)


def _resize(engine: Engine, exec_id: str, winsize: list[int], log) -> None:
    try:
        engine.exec_resize(exec_id, *winsize)
    except CbatchError as exc:
        log.warning("exec_resize_failed", **exc.log_fields())


def _send(conn: socket.socket, kind: str, payload: bytes = b"", **fields: object) -> bool:
    try:
        protocol.send(conn, kind, payload, **fields)
        return True
    except OSError:
        return False


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass
