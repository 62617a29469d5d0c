"""`qsub -I` on a pseudo-terminal, as a user at a login runs it (Torque's and OpenPBS's)."""

from __future__ import annotations

import os
import pty
import pwd
import re
import select
import signal
import time
from pathlib import Path


class QsubTerminal:
    def __init__(self, qsub: Path, user: str, env: dict[str, str], *args: str) -> None:
        entry = pwd.getpwnam(user)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(entry.pw_dir)
            os.execve("/usr/sbin/runuser", ["runuser", "-u", user, "--", str(qsub), "-I", *args],
                      {**env, "HOME": entry.pw_dir, "TERM": "xterm"})
        self.seen = b""

    def expect(self, pattern: bytes, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.seen)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no {pattern!r} on the terminal; it shows {self.seen!r}")
            try:
                self.seen += os.read(self.fd, 4096)
            except OSError:  # EIO: qsub ended
                raise AssertionError(f"qsub ended; the terminal showed {self.seen!r}") from None
        return found

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def close(self, timeout: float = 60) -> int:
        """qsub's exit status, once it has ended."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    return os.waitstatus_to_exitcode(status)
                try:
                    if select.select([self.fd], [], [], 0.2)[0]:
                        self.seen += os.read(self.fd, 4096)
                except OSError:
                    time.sleep(0.2)
            os.kill(self.pid, signal.SIGKILL)
            raise AssertionError(f"qsub -I did not end; the terminal showed {self.seen!r}")
        finally:
            os.close(self.fd)
