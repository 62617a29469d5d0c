"""The job's end, told from inside its container by cbatch-keeper (csrc/cbatch-keeper.c).

The container runs cbatch-keeper as pid 1 and the job's shell as its child. When the
shell ends, the keeper writes its wait status into a FIFO the daemon made for this job,
lets go of the container's output, and stays alive: its children's CPU times
(cutime/cstime) now hold everything the job used (it reaps every orphan too), and
pbs_mom counts them when it samples the adopted container once more as the starter exits
(torque-contract.md §6; scan_for_terminated). Learning the status here, instead of from
the container's own end, also takes Docker's teardown off the job's path.

The FIFO lives in a root-only directory beside the daemon's socket, owned by the job's
uid (the keeper runs as the job), and is bind-mounted at EXIT_PATH. What the job could
write into it is only its own exit status. A marker beside it records that pbs_mom
adopted the container, so a restarted daemon still lets pbs_mom take its last sample.
"""

from __future__ import annotations

import os
import select
import stat
from pathlib import Path

KEEPER_PATH = Path("/.cbatch-keeper")  # the static keeper, read-only, in every container
EXIT_PATH = Path("/.cbatch-exit")  # the job's exit FIFO, in its container


class ExitChannel:
    """One job's exit FIFO: made before the container, read when the job ends."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / name
        self.adopted_marker = folder / (name + ".adopted")
        self.fd: int | None = None
        self.exec_error: str | None = None  # why the job's command could not start
        self.copied: tuple[int, int] | None = None  # stdout, stderr bytes the keeper carried
        self._data = b""

    def create(self, uid: int, gid: int) -> None:
        """Make the FIFO for the job's uid and open its read end (never blocks)."""
        _private_dir(self.path.parent)
        self.discard()
        os.mkfifo(self.path, 0o600)
        os.chown(self.path, uid, gid)
        self.open()

    def open(self) -> bool:
        """Open the read end of an existing FIFO (a restarted daemon); False if none."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if not stat.S_ISFIFO(st.st_mode):
            return False
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        return True

    def wait(self, timeout: float | None = None) -> int | None:
        """The job shell's raw wait status once the keeper reports it; None on timeout
        or when the keeper went away without a word (its container's end tells then).
        A line "E <errno>" before the status means the job's command could not start.

        Until a writer first opens it, a FIFO polls as not ready (Linux), so this waits.
        """
        if self.fd is None:
            return None
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            while b"\n" in self._data:
                line, self._data = self._data.split(b"\n", 1)
                word = line.strip()
                if word.startswith(b"E ") and word[2:].isdigit():
                    self.exec_error = os.strerror(int(word[2:]))
                elif word.startswith(b"O ") and word[2:].replace(b" ", b"").isdigit():
                    out, _, err = word[2:].partition(b" ")
                    self.copied = (int(out), int(err or b"0"))
                elif word.isdigit():
                    return int(word)
            if len(self._data) > 64 or not poller.poll(None if timeout is None
                                                        else timeout * 1000):
                return None
            try:
                chunk = os.read(self.fd, 256)
            except BlockingIOError:
                continue
            if not chunk:  # EOF: the keeper closed it (or died) without a status
                self.close()  # a FIFO without writers would poll ready forever
                return None
            self._data += chunk

    def mark_adopted(self) -> None:
        self.adopted_marker.touch(mode=0o600)

    @property
    def adopted(self) -> bool:
        return self.adopted_marker.exists()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        """Close and remove the FIFO and its marker."""
        self.close()
        for path in (self.path, self.adopted_marker):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def container_status(wait_status: int) -> int:
    """A wait status as Docker reports a container's exit: N, or 128+signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def clean(folder: Path, keep: set[str]) -> int:
    """Remove the FIFOs of containers that are gone (at daemon start); the count."""
    removed = 0
    if not folder.is_dir():
        return 0
    for entry in os.scandir(folder):
        name = entry.name.removesuffix(".adopted")
        if name not in keep:
            os.unlink(entry.path)
            removed += 1
    return removed


def _private_dir(folder: Path) -> None:
    folder.mkdir(mode=0o711, parents=True, exist_ok=True)
    os.chmod(folder, 0o711)  # traversable, not listable: the job reaches only its own FIFO
