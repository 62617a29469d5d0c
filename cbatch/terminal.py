"""An interactive job's terminal: the container's own, attached with stdin.

The owner's keys and window sizes arrive from the starter as frames and go to the
container's terminal; its output goes back as stdout frames. Docker ends an attach when
its detach keys are typed, which an owner may do by accident: the terminal is then
attached again for as long as the job runs. Each resize is a Docker API call, so they
are paced: a window being dragged, or a flood of frames, costs the engine at most
RESIZES_PER_S calls a second per job.
"""

from __future__ import annotations

import socket
import time
from typing import Callable

from cbatch import demux, protocol
from cbatch.engine import Engine
from cbatch.errors import CbatchError

RESIZES_PER_S = 10


class Terminal:
    def __init__(self, engine: Engine, container_id: str, attach: socket.socket, log) -> None:
        self.engine = engine
        self.container_id = container_id
        self.attach = attach  # stdin and the terminal's output, replaced on a re-attach
        self.log = log
        self._size: list[int] | None = None
        self._resized_at = float("-inf")

    def type(self, keys: bytes) -> None:
        try:
            self.attach.sendall(keys)
        except OSError:
            pass  # the container's terminal is gone; the job's end is reported by wait

    def resize(self, winsize: object) -> None:
        """Set the container's terminal size (blocks the caller to pace the calls)."""
        if not protocol.is_winsize(winsize) or winsize == self._size:
            return
        time.sleep(max(0.0, self._resized_at + 1 / RESIZES_PER_S - time.monotonic()))
        self._size, self._resized_at = winsize, time.monotonic()
        try:
            self.engine.resize(self.container_id, rows=winsize[0], cols=winsize[1])
        except CbatchError as exc:  # it ended meanwhile: nothing to resize
            self.log.info("resize_failed", **exc.log_fields())

    def pump(self, emit: Callable[[int, bytes], bool]) -> str | None:
        """Copy the terminal's output to emit until the job ends; docker-init's failure
        message, if it printed one. Raises OSError when the stream breaks."""
        refused = False  # the starter is gone: nobody to show the terminal to

        def forward(stream: int, data: bytes) -> bool:
            nonlocal refused
            refused = not emit(stream, data)
            return not refused

        while True:
            failure = demux.pump_terminal(self.attach, forward)
            if failure is not None or refused or not self._reattached():
                return failure

    def close(self) -> None:
        self.attach.close()

    def _reattached(self) -> bool:
        """Attach again if the attach ended while the job goes on; False once it ended."""
        try:
            if not self.engine.inspect(self.container_id).get("State", {}).get("Running"):
                return False
            attach = self.engine.attach(self.container_id, stdout=True, stderr=True,
                                        stdin=True)
        except CbatchError:
            return False
        previous, self.attach = self.attach, attach
        previous.close()
        self.log.info("terminal_reattached")
        return True
