"""The one exception tree of cbatch; str(exc) is the job owner's line (after "cbatch: ").

Each class names what happened; the status the batch system records for it is in EXIT_STATUS.

    CbatchError                 base
    ├── RequestError            the job's request cannot be honoured: the user must change it
    │   ├── NotABatchJob        the caller is not a running batch job of that user
    │   ├── AlreadyRunning      this job task already runs in a container on this node
    │   ├── DirectiveError      a #CBATCH line is malformed or unknown (carries the line)
    │   ├── PolicyDenied        image, mount, uid or folder not allowed by the site policy
    │   ├── ShellUnavailable    the image cannot run the job's shell
    │   ├── AdminRefused        an admin request not allowed or not understood
    │   └── ExecRefused         a `cbatch exec` not allowed (not the caller's job) or invalid
    ├── ConfigError             /etc/cbatch.yaml is invalid (carries key path and line)
    ├── NodeError               this node cannot run the job now: requeue-able
    │   ├── NodeIncomplete      a folder, file or program the job needs is missing here
    │   ├── MountFailed         a job's folder or file could not be prepared for mounting
    │   ├── ResumeFailed        after a daemon restart, the job's container is not its own
    │   └── DaemonUnreachable   (the CLI's side) cbatchd cannot be reached or went away
    ├── EngineError             Docker failed: node-side, requeue-able
    │   ├── EngineUnavailable   dockerd cannot be reached
    │   ├── EngineRestarted     dockerd restarted under the job and stopped it
    │   ├── ImageUnavailable    the pinned image is not on this node
    │   └── ContainerFailed     Docker refused an operation on the container
    ├── ProtocolError           starter/daemon framing broken or version mismatch
    │   └── protocol.FrameError the bytes on the socket are no valid frame
    └── DaemonRefused           (the CLI's side) cbatchd's one-line answer, with its status
"""

from __future__ import annotations

# The two codes cbatch itself ends a job with. The starter (csrc/cbatch-starter.c) has the
# same numbers built in (it must know them when the daemon is unreachable); a test keeps
# them in step.
EXIT_NODE_FAILURE = 125  # cbatch could not run the job on this node: safe to requeue
EXIT_REFUSED = 126  # the request was refused: the job owner must change the job


class CbatchError(Exception):
    """Base for every failure a job owner or admin can meet; str() is the user's line."""

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message.replace("\n", " "))
        self.fields = fields

    @property
    def exit_status(self) -> int:
        """What the batch system records for this failure (EXIT_STATUS, most specific class first)."""
        return next(EXIT_STATUS[c] for c in type(self).__mro__ if c in EXIT_STATUS)

    def log_fields(self) -> dict[str, object]:
        """Structured fields for the daemon's record of this failure."""
        return {"error": type(self).__name__, "reason": str(self), **self.fields}


class RequestError(CbatchError):
    pass


class NotABatchJob(RequestError):
    pass


NotATorqueJob = NotABatchJob  # its former name


class AlreadyRunning(RequestError):
    pass


class DirectiveError(RequestError):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"bad #CBATCH directive on line {line} of the job script: {problem}",
                         line=line)
        self.line = line


class PolicyDenied(RequestError):
    pass


class ShellUnavailable(RequestError):
    pass


class AdminRefused(RequestError):
    pass


class ExecRefused(RequestError):
    pass


class ConfigError(CbatchError):
    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        where = f"{path} (line {line})" if line else path
        super().__init__(f"configuration error at {where}: {problem}", key=path, line=line)
        self.path = path
        self.line = line


class NodeError(CbatchError):
    pass


class NodeIncomplete(NodeError):
    pass


class MountFailed(NodeError):
    pass


class ResumeFailed(NodeError):
    pass


class DaemonUnreachable(NodeError):
    pass


class MotherSuperiorSilent(NodeError):
    """A sister could not learn the job's directives from its mother superior."""


class EngineError(CbatchError):
    pass


class EngineUnavailable(EngineError):
    pass


class EngineRestarted(EngineError):
    pass


class ImageUnavailable(EngineError):
    pass


class ContainerFailed(EngineError):
    pass


class ProtocolError(CbatchError):
    pass


class DaemonRefused(CbatchError):
    """cbatchd's error reply, as a client meets it; ends with the status cbatchd chose."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def exit_status(self) -> int:
        return self.status


# Whose side failed decides what the batch system records: the job's own (the owner must change the
# job), or the node's (anything else: requeue-able). The one place a class gets its code.
EXIT_STATUS: dict[type[CbatchError], int] = {
    RequestError: EXIT_REFUSED,
    CbatchError: EXIT_NODE_FAILURE,
}


def for_admin(exc: CbatchError) -> str:
    """An engine failure in an admin's words, for the admin CLI (str(exc) speaks to job
    owners: "the job can be requeued" means nothing to `cbatch images pull`)."""
    if not isinstance(exc, EngineError) or "docker_error" not in exc.fields:
        return str(exc)  # not Docker's own words: already an admin's line
    if isinstance(exc, EngineUnavailable):
        return (f"Docker is not answering on this node ({exc.fields.get('docker_error')}); "
                "start dockerd or check DOCKER_HOST")
    if isinstance(exc, ImageUnavailable):
        return (f"the registry has no image {exc.fields.get('ref', '')} or refuses this node; "
                "check the pinned digest and the node's registry login")
    why = exc.fields.get("explanation") or exc.fields.get("docker_error") or "no reason given"
    return f"Docker refused: {why}"


def oom_message(status: int, rss_limit: int) -> str:
    """The job owner's line for a job of which a process ran out of memory."""
    size = f" of {rss_limit / 2**20:.0f} MiB" if rss_limit > 0 else ""
    what = "job killed" if status == 128 + 9 else "a process of the job was killed"
    return (f"{what}: it ran out of memory (limit{size}); request more memory "
            "(qsub -l mem=...) or use less")
