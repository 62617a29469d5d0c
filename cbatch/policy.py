"""Decide what a job may have from the admin's policy and the job's directives.

Every rule about who and what: which uids may run at all (admit), which folders of a
job's may enter its container (is_job_path, check_workdir), which image and site mounts
it gets (decide, by user, group names and queue). No Docker, no filesystem; the one
outside fact is the job's group names, from NSS (group_names).
"""

from __future__ import annotations

import dataclasses
import grp
import os
from pathlib import Path

from cbatch.config import Audience, Config, Image, SiteMount
from cbatch.container import SYSTEM_TREES
from cbatch.directives import Directives
from cbatch.errors import PolicyDenied


SYSTEM_ROOTS = (Path("/"), Path("/var"))


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    image: Image
    site_mounts: tuple[SiteMount, ...]
    network: str
    pids_limit: int
    memory_limit: bool  # turn the job's RSS rlimit (from mem/pmem) into a cgroup limit
    drop_env: tuple[str, ...]
    workdir_roots: tuple[Path, ...] = (Path("/"),)
    read_only_root: bool = True
    tmp_bytes: int | None = None  # the job's /tmp and /var/tmp store (storage.py)


def admits(audience: Audience, user: str, group_names: frozenset[str], queue: str) -> bool:
    """An audience admits a job if it is everyone, or names its user, a group or its queue."""
    return (audience.is_everyone or user in audience.users
            or bool(group_names & set(audience.groups)) or queue in audience.queues)


def decide(cfg: Config, user: str, group_names: frozenset[str], queue: str,
           directives: Directives) -> Decision:
    """The image and mounts this job gets.

    Raises:
        PolicyDenied: the directive names an image that does not exist or is not offered
            to this user, or the node has no default image.
    """
    allowed = [i.alias for i in cfg.images if admits(i.audience, user, group_names, queue)]
    if directives.image is not None:
        image = cfg.image(directives.image)
        if image is None or image.alias not in allowed:
            offer = ", ".join(allowed) if allowed else "none"
            raise PolicyDenied(
                f'image "{directives.image}" (#CBATCH line {directives.image_line}) is not '
                f"allowed for you on this node; allowed images: {offer}",
                requested=directives.image, allowed=allowed)
    else:
        image = cfg.image(cfg.default_image)
        if image is None:
            raise PolicyDenied("this node has no default image; name one with "
                               "'#CBATCH image=<name>' or ask your admin")
    mounts = tuple(m for m in cfg.mounts if admits(m.audience, user, group_names, queue))
    return Decision(image=image, site_mounts=mounts, network=cfg.network,
                    pids_limit=cfg.pids_limit, memory_limit=cfg.memory_from_rlimit,
                    drop_env=cfg.drop_env, workdir_roots=cfg.workdir_roots,
                    read_only_root=cfg.read_only_root, tmp_bytes=cfg.tmp_bytes)


def admit(cfg: Config, uid: int, claimed_job_id: str | None = None) -> None:
    """Raises PolicyDenied for root and system uids unless the site allows them.

    claimed_job_id (what the process says it is, unproven) is for the log record only.
    """
    if cfg.allow_root or (uid != 0 and uid >= cfg.min_uid):
        return
    hint = ("; if this is not a root job, pbs_mom runs the starter privileged: ask your "
            "admin to remove $job_starter_run_privileged" if uid == 0 else "")
    raise PolicyDenied(f"jobs of uid {uid} may not run in containers on this node "
                       f"(site policy: uid {cfg.min_uid} and above); submit as a regular "
                       f"user{hint}", claimed_job_id=claimed_job_id)


def group_names(cfg: Config, gids: tuple[int, ...]) -> frozenset[str]:
    """The names of the job's groups, when some audience names groups (else none)."""
    if not cfg.uses_groups:
        return frozenset()
    names = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def is_job_path(path: Path, roots: tuple[Path, ...], pbs_home: Path) -> bool:
    """May a job's own folder (resolved) be bind-mounted into its container?"""
    if path in SYSTEM_ROOTS or not any(path == r or r in path.parents for r in roots):
        return False
    forbidden = (*SYSTEM_TREES, Path(os.path.realpath(pbs_home)))
    return not any(path == t or t in path.parents for t in forbidden)


def check_workdir(cwd: Path, decision: Decision, pbs_home: Path) -> None:
    """Raises PolicyDenied when the job's working directory may not enter its container."""
    if not is_job_path(Path(os.path.normpath(cwd)), decision.workdir_roots, pbs_home):
        roots = ", ".join(str(r) for r in decision.workdir_roots)
        raise PolicyDenied(f"the job's working directory {cwd} cannot be used in its "
                           f"container; submit from a directory under {roots} (not a system "
                           "folder)", cwd=str(cwd))
