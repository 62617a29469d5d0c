"""What a job's container is, as every part of cbatch speaks of it (pure, imports nothing).

The spec that engine.py hands to Docker unchanged, the binds and output streams it is
built from, and the label schema that names a container's job: written by spec.py, read
back (Labels.of) by the session, reconcile, `cbatch ps`/`kill` and `cbatch exec`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

LABEL = "cbatch"  # every container cbatch makes carries "cbatch=1" plus cbatch.* labels
# A job's own folders (cwd, home, TMPDIR) and output files never bring these into its
# container: the system's files, runtime sockets (the Docker socket lives under /run), logs.
SYSTEM_TREES = tuple(Path(p) for p in (
    "/proc", "/sys", "/dev", "/run", "/var/run", "/etc", "/boot", "/usr", "/bin", "/sbin",
    "/lib", "/lib32", "/lib64", "/libx32", "/var/lib", "/var/log", "/var/cache", "/root"))


@dataclasses.dataclass(frozen=True, slots=True)
class Bind:
    source: Path
    target: Path
    read_only: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    """Where one of the job's output streams goes inside the container."""

    mode: str  # "file": append to `path` (the starter's own file, mounted); "null"; "stream"
    path: Path | None = None
    same_as_stdout: bool = False


STREAM = Output("stream")


@dataclasses.dataclass(frozen=True, slots=True)
class Labels:
    """The cbatch.* labels of a job's container; "" where a container lacks one."""

    job_id: str = ""
    task: str = ""
    user: str = ""
    uid: str = ""
    starter_pid: str = ""  # with starter_start, proves a resuming starter is the same one
    starter_start: str = ""
    image: str = ""  # the image's alias
    version: str = ""  # of the cbatch that made it

    def for_docker(self) -> dict[str, str]:
        return {LABEL: "1", **{f"{LABEL}.{name}": getattr(self, name) for name in _NAMES}}

    @classmethod
    def of(cls, container: dict) -> Labels:
        """The labels of a container as Docker lists or inspects it."""
        raw = container.get("Labels") or container.get("Config", {}).get("Labels") or {}
        return cls(**{name: str(raw.get(f"{LABEL}.{name}", "")) for name in _NAMES})

    def starter(self) -> tuple[int, int]:
        """(pid, start ticks) of the job's starter; (0, 0) when the labels do not say."""
        try:
            return int(self.starter_pid or 0), int(self.starter_start or 0)
        except ValueError:
            return 0, 0


_NAMES = tuple(f.name for f in dataclasses.fields(Labels))


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerSpec:
    name: str
    create: dict  # docker APIClient.create_container keyword arguments
    host_config: dict  # APIClient.create_host_config keyword arguments, passed on unchanged
    labels: dict[str, str]
