"""Decide what a job may have from the admin's policy and the job's directives (pure).

No Docker, no filesystem: the caller passes the job's group names in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cbatch.config import Audience, Config, Image, SiteMount
from cbatch.directives import Directives
from cbatch.errors import PolicyDenied


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
