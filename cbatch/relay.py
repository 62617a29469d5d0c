"""Deliver the signals pbs_mom sends a job to every process of the job's container.

pbs_mom signals every process of the job's session; Docker's kill reaches only the
container's init. So the daemon (root on the host) finds the container's processes by
their pid namespace and signals each of them, leaving out the init, which would only
forward the signal a second time. Because SIGSTOP cannot be relayed through a stopped
starter, it stops the job when it sees the starter stopped after a TSTP (qsig -s
suspend: TSTP, then STOP 5 s later).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from cbatch.engine import Engine
from cbatch.errors import CbatchError

PROC = Path("/proc")
SUSPEND_WATCH_S = 10.0


class Relay:
    def __init__(self, engine: Engine, container_id: str, starter_pid: int,
                 starter_gone: threading.Event, log, proc: Path = PROC) -> None:
        self.engine = engine
        self.container_id = container_id
        self.starter_pid = starter_pid
        self.starter_gone = starter_gone
        self.log = log
        self.proc = proc
        self.relayed: set[int] = set()
        self._init_pid: int | None = None

    def deliver(self, signum: int) -> None:
        """Signal every process of the job; never raises (the caller is the session's
        control thread, which must live on to notice the starter's end)."""
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
            return signal_all(self._init_pid, signum, self.proc)
        except (OSError, KeyError, ValueError, CbatchError):
            pass
        try:
            self.engine.kill(self.container_id, signum)  # at least the init forwards it
        except CbatchError as exc:  # Docker down as well: the signal is lost, said so
            self.log.warning("signal_not_relayed", signal=signal.Signals(signum).name,
                             **exc.log_fields())
            return 0
        return 1

    def _watch_suspend(self) -> None:
        deadline = time.monotonic() + SUSPEND_WATCH_S
        while time.monotonic() < deadline and not self.starter_gone.is_set():
            if state(self.starter_pid, self.proc) == "T":
                count = self._signal_all(signal.SIGSTOP)
                self.log.info("job_suspended", processes=count)
                return
            time.sleep(0.05)


def signal_all(init_pid: int, signum: int, proc: Path = PROC) -> int:
    """Send signum to every process in init_pid's pid namespace except init; the count.

    The processes are found first and then signalled in a tight loop, parents before
    children: a shell signalled after its child (host pids wrap, so their order says
    nothing) could outlive it long enough to report the child's death, or to end with
    128+N rather than dying of the signal as the job natively does.

    Raises OSError when init_pid is gone or its namespace cannot be read.
    """
    namespace = os.readlink(proc / str(init_pid) / "ns" / "pid")
    if namespace == os.readlink(proc / "self" / "ns" / "pid"):
        raise PermissionError("refusing to signal the host's own pid namespace")
    parents: dict[int, int] = {}
    pinned: dict[int, int] = {}  # pid -> pidfd: a pid recycled meanwhile is not signalled
    try:
        for entry in os.scandir(proc):
            if not entry.name.isdigit() or int(entry.name) == init_pid:
                continue
            pid = int(entry.name)
            try:
                if os.readlink(proc / entry.name / "ns" / "pid") != namespace:
                    continue
                pinned[pid] = os.pidfd_open(pid)
                # read again once pinned: the pidfd's process is the one checked
                if os.readlink(proc / entry.name / "ns" / "pid") != namespace:
                    continue
                raw = (proc / entry.name / "stat").read_text()
                parents[pid] = int(raw[raw.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        sent = 0
        for pid in sorted(parents, key=lambda pid: (_depth(pid, parents), pid)):
            try:
                signal.pidfd_send_signal(pinned[pid], signum)
                sent += 1
            except (ProcessLookupError, PermissionError):
                continue
        return sent
    finally:
        for fd in pinned.values():
            os.close(fd)


def _depth(pid: int, parents: dict[int, int]) -> int:
    """How many of the namespace's processes lie between pid and its init."""
    depth, seen = 0, {pid}
    while parents.get(pid) in parents and parents[pid] not in seen:
        pid = parents[pid]
        seen.add(pid)
        depth += 1
    return depth


def state(pid: int, proc: Path = PROC) -> str | None:
    """The one-letter process state ("T" when stopped), or None when gone."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()[0]
