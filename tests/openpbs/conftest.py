"""The real-OpenPBS tier: jobs submitted with OpenPBS's qsub, put in front of
cbatch-starter by cbatch's execjob_launch hook, served by a cbatchd of the tier's own on
its own socket (the hook's config sets CBATCH_SOCKET in the job's environment).

Skipped where OpenPBS is not installed (../shared/openpbs/build-openpbs.sh builds it).
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from tests.harness import images, openpbs

USER = os.environ.get("CBATCH_OPENPBS_USER", "pbsuser")  # build-openpbs.sh's smoke user
IMAGE = "openpbs-tier"  # /etc/os-release in the image says ID=openpbs-tier


def pytest_collection_modifyitems(config, items):
    mine = [i for i in items if "tests/openpbs/" in str(i.fspath)]
    for item in mine:
        item.add_marker(pytest.mark.openpbs)
        if not openpbs.installed():
            item.add_marker(pytest.mark.skip(reason="no OpenPBS on this machine"))


@pytest.fixture(scope="session")
def pbs_image():
    api = docker.APIClient(version="1.41")
    image_id = images.build(api, IMAGE)
    yield image_id
    images.remove(api, IMAGE)
    api.close()


@pytest.fixture(scope="session")
def workdir():
    import pwd
    entry = pwd.getpwnam(USER)
    return Path(entry.pw_dir)


@pytest.fixture(scope="session")
def node(pbs_image):
    """cbatchd (batch.system: openpbs) and the hook: every job runs in a container."""
    openpbs.ensure_running()
    n = openpbs.CbatchNode({IMAGE: pbs_image}, IMAGE)
    n.start()
    openpbs.install_hook(n.hook_config)
    yield n
    openpbs.remove_hook()
    n.cleanup()


@pytest.fixture
def submit(node, workdir):
    def _submit(script: str | None, *args: str) -> openpbs.Job:
        return openpbs.submit(USER, script, *args, workdir=workdir)
    return _submit
