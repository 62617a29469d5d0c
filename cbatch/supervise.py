"""A started job container, to its end: output to the starter, signals to the job.

Three threads beside the session's: the pump (container output -> starter frames), the
control reader (starter frames -> signals, keystrokes, window sizes; its end of stream
means the starter is gone, and the container is killed), and the container's wait. The
job's status comes from the keeper the moment the job's shell ends, or else from the
container's own end.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Callable

from cbatch import demux, keeper, protocol
from cbatch.engine import Engine
from cbatch.errors import CbatchError, ContainerFailed, EngineError, EngineUnavailable
from cbatch.relay import Relay
from cbatch.terminal import Terminal

RELAYED = frozenset(int(s) for s in protocol.RELAYED_SIGNALS)
# After the job's end, how long an adopted container is kept for pbs_mom's last sample:
# it takes it as it reaps the starter, then kills the adopted session itself.
ACCOUNTING_HOLD_S = 10.0
STREAM_END_S = 30.0  # for output the keeper carried to come through Docker's attach
RESUMED_STREAM_S = 2.0  # the same after a daemon restart, when earlier output is uncounted


class Supervisor:
    def __init__(self, conn: socket.socket, send: Callable[..., bool], engine: Engine,
                 container_id: str, starter_pid: int, attach: socket.socket,
                 terminal: Terminal | None, exit_channel: keeper.ExitChannel | None,
                 streams_output: bool, retry_s: float, done: threading.Event, resumed: bool,
                 shell: str, log) -> None:
        self.conn, self.send, self.engine, self.shell = conn, send, engine, shell
        self.container_id = container_id
        self.attach, self.terminal, self.exit_channel = attach, terminal, exit_channel
        self.streams_output = streams_output  # output flows through attach, not into files
        self.resumed = resumed  # attached again after a daemon restart: not from the start
        self.received = [0, 0]  # stdout, stderr bytes the pump passed on
        self.retry_s = retry_s
        self.done = done  # set by the session once the job's end is known: EOF is normal
        self.log = log
        self.starter_gone = threading.Event()
        self.starter_closed = threading.Event()  # the starter's end of the connection closed
        self.container_done = threading.Event()  # Docker reported the container's end
        self.status_source = "container"  # or "keeper": who told the job's end
        self.init_failure: str | None = None  # the container's init could not run the job
        self.engine_lost = False
        self.relay = Relay(engine, container_id, starter_pid, self.starter_gone, log)

    def run(self) -> int:
        """Relay signals and output until the job ends; its wait status."""
        pump = threading.Thread(target=self._pump, daemon=True, name="pump")
        pump.start()
        threading.Thread(target=self._control, daemon=True, name="control").start()
        status = self._wait()
        if self.status_source == "keeper" and self.exit_channel.exec_error:
            self.init_failure = (f"cannot execute the job's command ({self.shell}): "
                                 f"{self.exit_channel.exec_error}")
        if self.status_source != "keeper":
            pump.join(timeout=30)
        elif self.streams_output and not self._carried_all(pump):
            # A terminal (its stream ends only with the container), or output the keeper
            # did not count: end the container, and with it the stream (and the hold).
            self._kill("container_not_killed", self.log.warning)
            pump.join(timeout=30)
        self.attach.close()
        if self.terminal is not None:
            self.terminal.close()
        return status

    def _carried_all(self, pump: threading.Thread) -> bool:
        """Has the pump passed on all the output the keeper carried (-s)? Waits for it
        while it is still on its way through Docker; the container lives on meanwhile."""
        expected = self.exit_channel.copied if self.terminal is None else None
        if expected is None:
            return False
        deadline = time.monotonic() + (RESUMED_STREAM_S if self.resumed else STREAM_END_S)
        while pump.is_alive() and time.monotonic() < deadline:
            if self.received[0] >= expected[0] and self.received[1] >= expected[1]:
                return True
            time.sleep(0.005)
        # after a restart the output from before it is not counted here: what came is all
        return self.resumed or (self.received[0] >= expected[0]
                                and self.received[1] >= expected[1])

    def hold_for_accounting(self) -> None:
        """Keep an adopted container's keeper alive until pbs_mom has counted it.

        pbs_mom samples the job's sessions once more as it reaps the starter, then kills
        what it adopted: so wait for the starter to close, then for the container to end,
        each bounded. Without adoption nothing else counts it: it is removed at once.
        """
        if (self.status_source != "keeper" or self.container_done.is_set()
                or not self.exit_channel.adopted):
            return
        began = time.monotonic()
        self.starter_closed.wait(ACCOUNTING_HOLD_S)
        ended = self.container_done.wait(ACCOUNTING_HOLD_S)
        self.log.info("accounting_hold", ended_by_pbs_mom=ended,
                      held_ms=round((time.monotonic() - began) * 1000, 1))

    def _wait(self) -> int:
        outcome: list = []

        def container_end() -> None:
            try:
                outcome.append(self._container_wait())
            except Exception as exc:  # noqa: BLE001 - handed to the session's thread
                outcome.append(exc)
            self.container_done.set()

        threading.Thread(target=container_end, daemon=True, name="wait").start()
        channel = self.exit_channel
        while not self.container_done.is_set():
            if channel is None or channel.fd is None:
                self.container_done.wait(0.5)
                continue
            raw = channel.wait(timeout=0.5)
            if raw is not None:
                self.status_source = "keeper"
                return keeper.container_status(raw)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def _container_wait(self) -> int:
        """The container's status, riding out a Docker outage of up to retry_s."""
        deadline = None
        while True:
            try:
                return self.engine.wait(self.container_id)
            except EngineError as exc:
                if isinstance(exc, ContainerFailed) or self.status_source == "keeper":
                    raise  # (once the keeper has told the end, the container is let go)
                if deadline is None:
                    deadline = time.monotonic() + self.retry_s
                    self.engine_lost = True
                    self.log.warning("engine_lost", **exc.log_fields())
                if time.monotonic() > deadline:
                    raise EngineUnavailable(
                        "the container engine on this node went away while the job ran and "
                        "did not come back; the job can be requeued") from exc
                time.sleep(0.5)

    def _pump(self) -> None:
        """Forward the container's output streams to the starter as frames."""
        kinds = {demux.STDOUT: protocol.KIND_STDOUT, demux.STDERR: protocol.KIND_STDERR}

        def emit(stream: int, data: bytes) -> bool:
            self.received[stream - 1] += len(data)
            return all(self.send(kinds[stream], data[i:i + protocol.MAX_PAYLOAD])
                       for i in range(0, len(data), protocol.MAX_PAYLOAD))

        try:
            self.init_failure = (self.terminal.pump(emit) if self.terminal is not None
                                 else demux.pump(self.attach, emit))
        except OSError as exc:
            self.log.warning("output_stream_broken", error=str(exc))

    def _control(self) -> None:
        """Read the starter's frames: signals to relay, an interactive job's keystrokes
        and window sizes; end of stream means the starter is gone."""
        while True:
            try:
                header, payload = protocol.recv(self.conn)
            except (protocol.PeerClosed, protocol.FrameError, OSError):
                break
            kind = header.get("t")
            if kind == protocol.KIND_SIGNAL and header.get("signal") in RELAYED:
                self.relay.deliver(int(header["signal"]))
            elif kind == protocol.KIND_INPUT and self.terminal is not None:
                self.terminal.type(payload)
            elif kind == protocol.KIND_RESIZE and self.terminal is not None:
                self.terminal.resize(header.get("winsize"))
        self.starter_closed.set()
        if self.done.is_set():
            return
        self.starter_gone.set()
        self.log.info("starter_gone")
        self._kill("container_not_killed", self.log.error)

    def _kill(self, event: str, emit: Callable[..., None]) -> None:
        try:
            self.engine.kill(self.container_id, signal.SIGKILL)
        except CbatchError as exc:
            emit(event, **exc.log_fields())
