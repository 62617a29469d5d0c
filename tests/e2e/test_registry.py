"""Images pinned by repo digest, pulled from a registry once per node when policy allows."""

from __future__ import annotations

import concurrent.futures
import shutil
import time

import pytest

from tests.e2e.conftest import make_daemon
from tests.harness import images
from tests.harness.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.harness]


@pytest.fixture(scope="module")
def pinned(api):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/setup-node.sh installs it)")
    registry = Registry()
    local = images.build(api, "gamma")
    repo = f"{registry.host}/cbatch-test/gamma"
    api.tag(local, repo, "1")
    for line in api.push(repo, tag="1", stream=True, decode=True):
        assert "error" not in line, line
    digest = next(d for d in api.inspect_image(local)["RepoDigests"] if d.startswith(repo))
    api.remove_image(f"{repo}:1")
    images.remove(api, "gamma")  # the node now lacks the image: a pull must fetch it
    yield digest
    try:
        api.remove_image(digest, force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass
    registry.close()


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
