"""The one exception tree of cbatch; str(exc) is the job owner's line (after "cbatch: ").

    CbatchError                 base; exit_status says what Torque records
    ├── RequestError            the job's request cannot be honoured: the user must change it
    │   ├── NotATorqueJob       the caller is not a running Torque job of that user
    │   ├── DirectiveError      a #CBATCH line is malformed or unknown (carries the line)
    │   └── PolicyDenied        image, mount or option not allowed by the site policy
    ├── ConfigError             /etc/cbatch.yaml is invalid (carries key path and line)
    ├── EngineError             Docker failed: node-side, requeue-able
    │   ├── EngineUnavailable   dockerd cannot be reached
    │   ├── ImageUnavailable    the pinned image is not on this node
    │   └── ContainerFailed     create/start/attach failed
    └── ProtocolError           starter/daemon framing broken or version mismatch
"""

from __future__ import annotations

# The two codes cbatch itself ends a job with. The starter (csrc/cbatch-starter.c) has the
# same numbers built in (it must know them when the daemon is unreachable); a test keeps
# them in step.
EXIT_NODE_FAILURE = 125  # cbatch could not run the job on this node: safe to requeue
EXIT_REFUSED = 126  # the request was refused: the job owner must change the job


class CbatchError(Exception):
    """Base for every failure a job owner or admin can meet; str() is the user's line."""

    exit_status = EXIT_NODE_FAILURE

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message.replace("\n", " "))
        self.fields = fields

    def log_fields(self) -> dict[str, object]:
        """Structured fields for the daemon's record of this failure."""
        return {"error": type(self).__name__, "reason": str(self), **self.fields}


class RequestError(CbatchError):
    exit_status = EXIT_REFUSED


class NotATorqueJob(RequestError):
    pass


class DirectiveError(RequestError):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"bad #CBATCH directive on line {line} of the job script: {problem}",
                         line=line)
        self.line = line


class PolicyDenied(RequestError):
    pass


class AdminRefused(RequestError):
    pass


class ConfigError(CbatchError):
    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        where = f"{path} (line {line})" if line else path
        super().__init__(f"configuration error at {where}: {problem}", key=path, line=line)
        self.path = path
        self.line = line


class EngineError(CbatchError):
    pass


class EngineUnavailable(EngineError):
    pass


class ImageUnavailable(EngineError):
    pass


class ContainerFailed(EngineError):
    pass


class ProtocolError(CbatchError):
    pass


def for_admin(exc: CbatchError) -> str:
    """An engine failure in an admin's words, for the admin CLI (str(exc) speaks to job
    owners: "the job can be requeued" means nothing to `cbatch images pull`)."""
    if not isinstance(exc, EngineError):
        return str(exc)
    if isinstance(exc, EngineUnavailable):
        return (f"Docker is not answering on this node ({exc.fields.get('docker_error')}); "
                "start dockerd or check DOCKER_HOST")
    if isinstance(exc, ImageUnavailable):
        return (f"the registry has no image {exc.fields.get('ref', '')} or refuses this node; "
                "check the pinned digest and the node's registry login")
    why = exc.fields.get("explanation") or exc.fields.get("docker_error") or "no reason given"
    return f"Docker refused: {why}"
