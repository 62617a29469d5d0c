"""The real-OpenPBS tier: jobs submitted with OpenPBS's qsub, put in front of
cbatch-starter by cbatch's execjob_launch hook, served by a cbatchd of the tier's own on
its own socket (the hook's config sets CBATCH_SOCKET in the job's environment).

Skipped where OpenPBS is not installed (scripts/setup-openpbs.sh builds it), except under
CI=true, where that fails the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from tests.harness import images, openpbs, users

USER = os.environ.get("CBATCH_OPENPBS_USER", "cbopbs1")
GROUP = os.environ.get("CBATCH_OPENPBS_GROUP", "cbopbsg2")
IMAGE = "openpbs-tier"  # /etc/os-release in the image says ID=openpbs-tier


def pytest_collection_modifyitems(config, items):
    mine = [i for i in items if "tests/openpbs/" in str(i.fspath)]
    for item in mine:
        item.add_marker(pytest.mark.openpbs)
    if not mine or openpbs.installed():
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("CI=true but OpenPBS is not installed: run "
                                "scripts/setup-openpbs.sh (see .ci/run)")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason="no OpenPBS on this machine"))


@pytest.fixture(scope="session")
def pbs_image():
    api = docker.APIClient(version="1.41")
    image_id = images.build(api, IMAGE)
    yield image_id
    images.remove(api, IMAGE)
    api.close()


@pytest.fixture(scope="session")
def pbs_user():
    entry = users.create(USER, GROUP)
    yield entry
    users.remove(USER, GROUP)


@pytest.fixture(scope="session")
def workdir(pbs_user):
    return Path(pbs_user.pw_dir)


@pytest.fixture(scope="session")
def node(pbs_image, pbs_user):
    """cbatchd (batch.system: openpbs) and the hook's switch: native jobs or every job in a
    container."""
    openpbs.ensure_running()
    n = openpbs.CbatchNode({IMAGE: pbs_image}, IMAGE)
    n.start()
    n.hook = openpbs.Hook(n.hook_config)
    n.user = USER
    yield n
    openpbs.remove_hook()
    n.cleanup()


@pytest.fixture
def native(node, workdir):
    """Submit with the hook off: the job runs as OpenPBS runs it without cbatch."""
    def _submit(script: str | None, *args: str) -> openpbs.Job:
        node.hook.use(False)
        return openpbs.submit(USER, script, *args, workdir=workdir)
    return _submit


@pytest.fixture
def submit(node, workdir):
    """Submit with cbatch's hook on: the job runs in its container."""
    submitted: list[openpbs.Job] = []

    def _submit(script: str | None, *args: str) -> openpbs.Job:
        node.hook.use(True)
        job = openpbs.submit(USER, script, *args, workdir=workdir)
        submitted.append(job)
        return job
    yield _submit
    for job in submitted:  # nothing left running for the next test
        openpbs.run(f"{openpbs.PBS_EXEC}/bin/qdel", "-W", "force", job.id, check=False)
