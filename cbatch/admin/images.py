"""The site's pinned images on this node: which are here, pulling the set, pruning old pins.

For `cbatch images`. A node can be filled before it takes jobs (`pull`), and pins an admin
has moved on from can be dropped (`prune`). Prune only touches images of the repositories
the configuration pins by digest, never one still pinned or used by a container.
"""

from __future__ import annotations

import dataclasses

from cbatch.config import Config
from cbatch.engine import Engine
from cbatch.errors import CbatchError, for_admin


@dataclasses.dataclass(frozen=True, slots=True)
class Present:
    alias: str
    ref: str
    default: bool
    size_bytes: int | None  # None: not on this node


def survey(cfg: Config, engine: Engine) -> list[Present]:
    """Each configured alias, with its image's size when the node has it."""
    by_ref = {}
    for image in engine.images():
        for name in (image["Id"], *(image.get("RepoDigests") or [])):
            by_ref[name] = image.get("Size")
    return [Present(i.alias, i.ref, i.alias == cfg.default_image, by_ref.get(i.ref))
            for i in cfg.images]


def pull(cfg: Config, engine: Engine) -> list[tuple[str, str]]:
    """Fetch every pinned image the node lacks; (alias, what happened) each."""
    outcomes = []
    for item in survey(cfg, engine):
        if item.size_bytes is not None:
            outcomes.append((item.alias, "present"))
        elif "@" not in item.ref:
            outcomes.append((item.alias, "missing: a local image id cannot be pulled; load "
                                         "the image on this node"))
        else:
            try:
                engine.ensure_image(item.ref, "missing")
                outcomes.append((item.alias, "pulled"))
            except CbatchError as exc:
                outcomes.append((item.alias, f"failed: {for_admin(exc)}"))
    return outcomes


def prune(cfg: Config, engine: Engine) -> list[tuple[str, str | None]]:
    """Remove images of the pinned repositories that no alias pins any more;
    (image, None when removed or why it was kept) each."""
    pinned = {i.ref for i in cfg.images}
    repos = {ref.partition("@")[0] for ref in pinned if "@" in ref}
    results = []
    for image in engine.images():
        digests = image.get("RepoDigests") or []
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        names = [d.partition("@")[0] for d in digests] + [t.rpartition(":")[0] for t in tags]
        if (not digests or image["Id"] in pinned or pinned.intersection(digests)
                or not all(n in repos for n in names)):
            continue
        results.append((digests[0], engine.remove_image(image["Id"])))
    return results
