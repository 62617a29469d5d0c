"""Admin operations served by cbatchd over its socket: who may, and what they do."""

from __future__ import annotations

import grp
import signal

from cbatch.config import Config
from cbatch.container import Labels
from cbatch.engine import Engine
from cbatch import protocol
from cbatch.errors import AdminRefused
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


def serve(conn, cfg: Config, who: Peer, header: dict, engine_factory, log) -> None:
    """ps and kill for uid 0 and the admin group; AdminRefused for everyone else."""
    if not is_admin(cfg, who):
        raise AdminRefused("admin operations are for root and the admin group only")
    reply = handle(engine_factory(), header)
    log.info("admin_operation", **{k: v for k, v in reply.items() if k != "containers"})
    protocol.send(conn, protocol.KIND_REPLY, **reply)


def handle(engine: Engine, header: dict) -> dict:
    """Serve one admin request; the reply's fields."""
    op = header.get("op")
    if op == "ping":  # cbatch health: the daemon answers, not just accepts
        return {"ok": True, "op": "ping"}
    if op == "ps":
        rows = []
        for c in engine.containers():
            labels = Labels.of(c)
            rows.append({"job_id": labels.job_id or "?", "task": labels.task or "?",
                         "user": labels.user or "?", "image": labels.image or "?",
                         "state": c.get("State", "?"), "container_id": c["Id"][:12],
                         "starter_pid": labels.starter_pid or "?"})
        return {"ok": True, "op": "ps", "containers": rows}
    if op == "kill":
        job_id = str(header.get("job_id", ""))
        try:
            signum = signal.Signals(int(header.get("signal", signal.SIGKILL)))
        except (TypeError, ValueError):
            raise AdminRefused("kill: not a signal number") from None
        found = engine.containers(job_id=job_id) if job_id else []
        if not found:
            raise AdminRefused(f"no container for job {job_id} on this node")
        for c in found:
            engine.kill(c["Id"], signum)
        return {"ok": True, "op": "kill", "job_id": job_id, "signal": signum.name,
                "count": len(found)}
    raise AdminRefused(f"unknown admin operation {str(op)[:20]!r}")
