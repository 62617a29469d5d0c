"""Local test images made with `docker import` of host binaries (never pulled)."""

from __future__ import annotations

from pathlib import Path

import docker

from cbatch.harness import rootfs

TAG = "cbatch-test"


def build(client: docker.APIClient, release: str, extra_files=None, tools=()) -> str:
    """An image of the host's basic tools, plus `tools` (names, with their libraries)."""
    tar = rootfs.build(release=release, extra_files=extra_files, tools=rootfs.TOOLS + tools)
    client.import_image_from_data(tar, repository=TAG, tag=release)
    return client.inspect_image(f"{TAG}:{release}")["Id"]


def libraries(binary: Path) -> set[Path]:
    """The shared libraries a host binary loads (ldd), to put beside it in an image."""
    return rootfs.libraries(binary)


def remove(client: docker.APIClient, release: str) -> None:
    try:
        client.remove_image(f"{TAG}:{release}", force=True)
    except docker.errors.NotFound:
        pass
