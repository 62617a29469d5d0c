"""Find cbatch containers whose job is gone and remove them, verifying by listing again.

Runs when the daemon starts, periodically while it runs, and from `cbatch cleanup`; and
as a job's container is created, for a stale one of the same job (create).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

from cbatch import peer
from cbatch.container import ContainerSpec, Labels
from cbatch.engine import Engine
from cbatch.errors import AlreadyRunning, CbatchError, ContainerFailed


@dataclasses.dataclass(frozen=True, slots=True)
class Leftover:
    container_id: str
    name: str
    job_id: str
    user: str
    reason: str


def orphans(containers: Iterable[dict], busy: set[str],
            alive: Callable[[int, int], bool] = peer.is_alive) -> list[Leftover]:
    """Containers not owned by a live session whose starter process is gone."""
    found = []
    for c in containers:
        if c["Id"] in busy:
            continue
        labels = Labels.of(c)
        pid, ticks = labels.starter()
        if pid and alive(pid, ticks):
            continue
        found.append(Leftover(c["Id"], (c.get("Names") or ["?"])[0].lstrip("/"),
                              labels.job_id or "?", labels.user or "?", "starter gone"))
    return found


def sweep(engine: Engine, busy: set[str] = frozenset(),
          settle_s: float = 5.0) -> tuple[list[Leftover], list[str]]:
    """Remove orphaned containers; (removed, still present after removal).

    When someone else is removing the same container (the daemon's sweep and `cbatch
    cleanup` at once), Docker answers "removal in progress" and still lists it for a
    moment, so the verifying list is repeated for up to settle_s before it counts as failed.
    """
    leftovers = orphans(engine.containers(), set(busy))
    for item in leftovers:
        try:
            engine.remove(item.container_id)
        except CbatchError:
            pass  # reported below by listing again
    pending = {i.container_id for i in leftovers}
    deadline = time.monotonic() + settle_s
    while pending:
        pending &= {c["Id"] for c in engine.containers()}
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return [i for i in leftovers if i.container_id not in pending], sorted(pending)


def create(engine: Engine, container: ContainerSpec, log) -> str:
    """Create a job's container; a stale one of the same job (requeue) is replaced.

    Raises:
        AlreadyRunning: a container of this job task exists and its starter lives.
    """
    try:
        return engine.create(container)
    except ContainerFailed as exc:
        if exc.fields.get("status_code") != 409:
            raise
    existing = engine.find(container.name)
    if existing and not orphans([existing], busy=set()):  # its starter lives
        raise AlreadyRunning("this job task already runs in a container on this node",
                             other_container=existing["Id"][:12])
    if existing:
        log.info("stale_container_replaced", stale=existing["Id"][:12])
        engine.remove(existing["Id"])
    return engine.create(container)
