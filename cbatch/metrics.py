"""The daemon's counters for Prometheus, written for node_exporter's textfile collector.

Sessions report each job's end with job_ended(); the daemon's loop writes the file every
metrics.interval_s with write_to_textfile (a temporary file renamed over the old one, so
the collector never reads half a file). Counts start at zero with each daemon start, as
Prometheus counters may.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

OUTCOMES = ("ran", "refused", "node_failure", "oom")

REGISTRY = CollectorRegistry()
JOBS = Counter("cbatch_jobs", "Jobs by how they ended: ran (any exit status), refused "
               "(126: the owner must change the job), node_failure (125: requeue-able), oom "
               "(ran, and the kernel killed a process of it for memory)", ["outcome"],
               registry=REGISTRY)
LAUNCH = Histogram("cbatch_launch_seconds", "From the starter's connection to its "
                   "container's start", registry=REGISTRY,
                   buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
RUNNING = Gauge("cbatch_containers_running", "Job containers the daemon supervises now",
                registry=REGISTRY)
PULLS = Counter("cbatch_image_pulls", "Image pulls by jobs, by result (ok, failed)",
                ["result"], registry=REGISTRY)
RECONNECTS = Counter("cbatch_reconnects", "Starters of running jobs resumed after a "
                     "daemon restart", registry=REGISTRY)
for _outcome in OUTCOMES:
    JOBS.labels(_outcome)
for _result in ("ok", "failed"):
    PULLS.labels(_result)


def job_ended(outcome: str, marks: dict[str, float]) -> None:
    """Count one job's end; `marks` are the session's step times (monotonic seconds).

    Only job requests count (an admin or exec request has no "request" mark); the launch
    latency only for a container this daemon started.
    """
    if "request" not in marks:
        return
    JOBS.labels(outcome).inc()
    if "started" in marks:
        LAUNCH.observe(marks["started"] - marks["accepted"])


def phases(marks: dict[str, float]) -> dict[str, float]:
    """Milliseconds between a session's steps, for its log record and the benchmarks."""
    names = list(marks)
    return {b: round((marks[b] - marks[a]) * 1000, 1) for a, b in zip(names, names[1:])}


def resumed() -> None:
    RECONNECTS.inc()


def pulled(ok: bool) -> None:
    PULLS.labels("ok" if ok else "failed").inc()


def watch_running(count: Callable[[], int]) -> None:
    RUNNING.set_function(count)


def write(path: Path) -> None:
    """Raises OSError when the file cannot be written."""
    write_to_textfile(str(path), REGISTRY)
