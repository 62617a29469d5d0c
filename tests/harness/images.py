"""Local test images made with `docker import` of host binaries (never pulled)."""

from __future__ import annotations

import docker

from cbatch.harness import rootfs

TAG = "cbatch-test"


def build(client: docker.APIClient, release: str, extra_files=None) -> str:
    tar = rootfs.build(release=release, extra_files=extra_files)
    client.import_image_from_data(tar, repository=TAG, tag=release)
    return client.inspect_image(f"{TAG}:{release}")["Id"]


def remove(client: docker.APIClient, release: str) -> None:
    try:
        client.remove_image(f"{TAG}:{release}", force=True)
    except docker.errors.NotFound:
        pass
