"""A failure of one connection, told once: to the starter as one ERROR frame with the
owner's line, to the admin as one record (refuse); a bug, with an incident id that is
in both (report_bug). Used by the session and the daemon's dispatcher.
"""

from __future__ import annotations

import os
import secrets
from typing import Callable

from cbatch import metrics, protocol
from cbatch.errors import EXIT_NODE_FAILURE, EXIT_REFUSED, CbatchError


def refuse(send: Callable[..., bool], log, exc: CbatchError, marks: dict[str, float]) -> None:
    """One ERROR frame with the owner's line, one record for the admin."""
    fields = exc.log_fields()
    if exc.exit_status == EXIT_REFUSED:  # the user's side: an expected refusal
        log.warning("job_refused", exit_status=exc.exit_status, **fields)
    else:
        log.error("job_failed", exit_status=exc.exit_status,
                  cause=repr(exc.__cause__) if exc.__cause__ else None, **fields)
    send(protocol.KIND_ERROR, status=exc.exit_status, message=str(exc))
    metrics.job_ended("refused" if exc.exit_status == EXIT_REFUSED else "node_failure", marks)


def report_bug(send: Callable[..., bool], log) -> None:
    """A bug (not a CbatchError): logged with its traceback; the user gets an incident id."""
    incident = secrets.token_hex(3)
    log.exception("internal_error", incident=incident)
    send(protocol.KIND_ERROR, status=EXIT_NODE_FAILURE,
         message=f"internal error in cbatchd on {os.uname().nodename} "
                 f"(incident {incident}); your job did not complete; "
                 "please report this id to your admin")
