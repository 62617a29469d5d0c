"""Configure structlog once, in the mains: JSON lines on stderr for journald, or to a file.

A log file is reopened when its name stops pointing at the file written to (logrotate
moved or removed it), so rotation needs no signal and loses no record.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class WatchedFile:
    """A text sink appending to `path`, reopened when the path names another file.

    structlog's PrintLogger writes a record and flushes under one lock per sink; each
    flush checks the path first (one stat per record), as logging's WatchedFileHandler does.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = -1
        self.pending: list[str] = []
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self.identity

    def write(self, text: str) -> int:
        self.pending.append(text)
        return len(text)

    def flush(self) -> None:
        if not self.pending:
            return
        data, self.pending = "".join(self.pending).encode("utf-8", "replace"), []
        try:
            if self._moved():
                self._open()
        except OSError:
            pass  # keep writing to the file already open rather than lose the record
        os.write(self.fd, data)


def configure(fmt: str = "json", level: str = "info", path: Path | None = None) -> None:
    """Records go to `path` when given (see WatchedFile), else to stderr."""
    renderer = (structlog.processors.JSONRenderer(sort_keys=False) if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    sink = WatchedFile(path) if path is not None else sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=False,
    )
