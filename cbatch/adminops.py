"""Admin operations served by cbatchd over its socket: who may, and what they do."""

from __future__ import annotations

import grp
import signal

from cbatch.config import Config
from cbatch.engine import Engine
from cbatch.errors import RequestError
from cbatch.peer import Peer


def is_admin(cfg: Config, who: Peer) -> bool:
    if who.uid == 0:
        return True
    if cfg.admin_group is None:
        return False
    try:
        gid = grp.getgrnam(cfg.admin_group).gr_gid
    except KeyError:
        return False
    return gid == who.gid or gid in who.groups


def handle(engine: Engine, header: dict) -> dict:
    """Serve one admin request; the reply's fields."""
    op = header.get("op")
    if op == "ping":  # cbatch health: the daemon answers, not just accepts
        return {"ok": True, "op": "ping"}
    if op == "ps":
        rows = []
        for c in engine.containers():
            labels = c.get("Labels") or {}
            rows.append({"job_id": labels.get("cbatch.job_id", "?"),
                         "task": labels.get("cbatch.task", "?"),
                         "user": labels.get("cbatch.user", "?"),
                         "image": labels.get("cbatch.image", "?"),
                         "state": c.get("State", "?"), "container_id": c["Id"][:12],
                         "starter_pid": labels.get("cbatch.starter_pid", "?")})
        return {"ok": True, "op": "ps", "containers": rows}
    if op == "kill":
        job_id = str(header.get("job_id", ""))
        try:
            signum = signal.Signals(int(header.get("signal", signal.SIGKILL)))
        except (TypeError, ValueError):
            raise RequestError("kill: not a signal number") from None
        found = engine.containers(job_id=job_id) if job_id else []
        if not found:
            raise RequestError(f"no container for job {job_id} on this node")
        for c in found:
            engine.kill(c["Id"], signum)
        return {"ok": True, "op": "kill", "job_id": job_id, "signal": signum.name,
                "count": len(found)}
    raise RequestError(f"unknown admin operation {str(op)[:20]!r}")
