"""Deliver the signals pbs_mom sends a job to every process of the job's container.

pbs_mom signals every process of the job's session; Docker's kill reaches only the
container's init. So the daemon signals each container process itself (procs.py) and,
because SIGSTOP cannot be relayed through a stopped starter, stops the job when it sees
the starter stopped after a TSTP (qsig -s suspend: TSTP, then STOP 5 s later).
"""

from __future__ import annotations

import signal
import threading
import time

from cbatch import procs
from cbatch.engine import Engine
from cbatch.errors import CbatchError

SUSPEND_WATCH_S = 10.0


class Relay:
    def __init__(self, engine: Engine, container_id: str, starter_pid: int,
                 starter_gone: threading.Event, log) -> None:
        self.engine = engine
        self.container_id = container_id
        self.starter_pid = starter_pid
        self.starter_gone = starter_gone
        self.log = log
        self.relayed: set[int] = set()
        self._init_pid: int | None = None

    def deliver(self, signum: int) -> None:
        self.relayed.add(signum)
        count = self._signal_all(signum)
        self.log.info("signal_relayed", signal=signal.Signals(signum).name, processes=count)
        if signum == signal.SIGTSTP:
            threading.Thread(target=self._watch_suspend, daemon=True, name="suspend").start()

    def killed_by_relayed(self, status: int) -> int | None:
        """The relayed signal a 128+N container status means the job died of, if any."""
        return status - 128 if status > 128 and status - 128 in self.relayed else None

    def _signal_all(self, signum: int) -> int:
        try:
            if self._init_pid is None:
                self._init_pid = int(self.engine.inspect(self.container_id)["State"]["Pid"])
            return procs.signal_all(self._init_pid, signum)
        except (OSError, KeyError, ValueError, CbatchError):
            self.engine.kill(self.container_id, signum)  # at least the init forwards it
            return 1

    def _watch_suspend(self) -> None:
        deadline = time.monotonic() + SUSPEND_WATCH_S
        while time.monotonic() < deadline and not self.starter_gone.is_set():
            if procs.state(self.starter_pid) == "T":
                count = self._signal_all(signal.SIGSTOP)
                self.log.info("job_suspended", processes=count)
                return
            time.sleep(0.05)
