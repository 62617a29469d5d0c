"""Signal a container's processes from the host, the way pbs_mom signals a job's session.

pbs_mom sends a signal to every process of the job's session; Docker's kill reaches only
the container's pid 1. The daemon (root on the host) finds the container's processes by
their pid namespace and signals each of them, leaving out the init, which would only
forward the signal a second time.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def signal_all(init_pid: int, signum: int, proc: Path = PROC) -> int:
    """Send signum to every process in init_pid's pid namespace except init; the count.

    Raises OSError when init_pid is gone or its namespace cannot be read.
    """
    namespace = os.readlink(proc / str(init_pid) / "ns" / "pid")
    if namespace == os.readlink(proc / "self" / "ns" / "pid"):
        raise PermissionError("refusing to signal the host's own pid namespace")
    sent = 0
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) == init_pid:
            continue
        try:
            if os.readlink(proc / entry.name / "ns" / "pid") != namespace:
                continue
            os.kill(int(entry.name), signum)
            sent += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return sent


def state(pid: int, proc: Path = PROC) -> str | None:
    """The one-letter process state ("T" when stopped), or None when gone."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()[0]
