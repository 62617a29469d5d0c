"""Images pinned by repo digest, pulled from a registry once per node when policy allows."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import make_daemon
from tests.harness import images
from tests.harness.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.harness]


@pytest.fixture(scope="module")
def registry():
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/setup-node.sh installs it)")
    r = Registry()
    yield r
    r.close()


def push(api, registry, release: str, tag: str, name: str = "gamma") -> str:
    """Build an image, push it as cbatch-test/<name>:<tag>, drop it locally; its digest."""
    local = images.build(api, release)
    repo = f"{registry.host}/cbatch-test/{name}"
    api.tag(local, repo, tag)
    for line in api.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    digest = next(d for d in api.inspect_image(local)["RepoDigests"] if d.startswith(repo))
    api.remove_image(f"{repo}:{tag}")
    images.remove(api, release)  # the node now lacks the image: a pull must fetch it
    return digest


def forget(api, *refs: str) -> None:
    for ref in refs:
        try:
            api.remove_image(ref, force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.fixture(scope="module")
def pinned(api, registry):
    digest = push(api, registry, "gamma", "1")
    yield digest
    forget(api, digest)


def test_missing_pinned_image_is_pulled_once_for_concurrent_jobs(pinned, image_ids, site_dirs,
                                                                 test_user, submit, api):
    d = make_daemon(image_ids, site_dirs)
    settings = dict(d.settings)
    settings["images"] = dict(settings["images"], pull="missing")
    settings["images"]["aliases"] = dict(settings["images"]["aliases"], gamma={"ref": pinned})
    d.write_config(settings)
    d.start()
    try:
        since = int(time.time()) - 1
        jobs = [submit("#!/bin/bash\n#CBATCH image=gamma\nhead -1 /etc/os-release\n", d=d)
                for _ in range(3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            statuses = list(pool.map(lambda j: j.wait(120), jobs))
        assert statuses == [0, 0, 0], [j.output() for j in jobs]
        assert all(j.output()[0] == "ID=gamma\n" for j in jobs)
        pulls = [e for e in api.events(since=since, until=int(time.time()) + 1, decode=True,
                                       filters={"type": "image", "event": "pull"})]
        assert len(pulls) == 1, pulls
        record = d.wait_for_event("container_started", job_id=jobs[0].spec.job_id)
        assert record["digest"] == pinned and record["image"] == "gamma"
    finally:
        d.cleanup()


def test_images_lists_pulls_and_prunes_the_pinned_set(api, registry, image_ids, site_dirs):
    # a repository of its own: prune must not meet the other test's pulls
    old = push(api, registry, "delta-old", "old", name="delta")
    new = push(api, registry, "delta-new", "new", name="delta")
    d = make_daemon(image_ids, site_dirs)
    settings = dict(d.settings)
    settings["images"] = dict(settings["images"], aliases=dict(
        settings["images"]["aliases"], delta={"ref": new}, gone={"ref": "sha256:" + "0" * 64}))
    d.write_config(settings)

    def cbatch(*args):
        return subprocess.run([sys.executable, "-m", "cbatch.admin", "--config",
                               str(d.config_path), "images", *args], capture_output=True,
                              text=True, timeout=120)
    try:
        listing = cbatch().stdout.splitlines()
        assert any(line.startswith("alpha (default)  sha256:") and line.endswith(" MiB")
                   for line in listing), listing
        assert f"delta  {new}  missing" in listing and any(
            line.startswith("gone  ") and line.endswith("missing") for line in listing)
        pulled = cbatch("pull")
        assert pulled.returncode == 1  # one alias cannot be pulled: the admin must act
        assert pulled.stdout.splitlines() == [
            "alpha: present", "beta: present", "delta: pulled",
            "gone: missing: a local image id cannot be pulled; load the image on this node"]
        assert api.inspect_image(new)
        api.pull(new.partition("@")[0], tag=old.partition("@")[2])  # a pin moved on from
        user = api.create_container(old, "/bin/true")["Id"]  # Docker refuses to remove it
        kept = cbatch("prune").stdout.splitlines()
        assert len(kept) == 1 and kept[0].startswith(f"kept {old}: "), kept
        assert api.inspect_image(old)
        api.remove_container(user)
        pruned = cbatch("prune")
        assert pruned.stdout.splitlines() == [f"removed {old}"], pruned.stdout + pruned.stderr
        with pytest.raises(Exception, match="No such image"):
            api.inspect_image(old)
        assert api.inspect_image(new) and api.inspect_image(image_ids["alpha"])
        assert cbatch("prune").stdout == "nothing to prune\n"
    finally:
        d.cleanup()
        forget(api, old, new)
