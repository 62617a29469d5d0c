"""The real-Torque tier: jobs submitted with qsub to a real pbs_mom whose $job_starter is
the installed cbatch-starter, served by a cbatchd of the tests' own.

Skipped where Torque is not installed, except under CI=true, where that fails the run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from tests.harness import images, torque, users

USER = os.environ.get("CBATCH_TORQUE_USER", "cbtorq1")
GROUP = os.environ.get("CBATCH_TORQUE_GROUP", "cbtorqg2")
IMAGE = "torque-tier"  # /etc/os-release in the image says ID=torque-tier


def pytest_collection_modifyitems(config, items):
    mine = [i for i in items if "tests/torque/" in str(i.fspath)]
    if not mine or torque.installed():
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("CI=true but Torque is not installed: run "
                                "../shared/torque/build-torque.sh (see .ci/run)")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason="no Torque on this machine"))


@pytest.fixture(scope="session")
def tq_api():
    client = docker.APIClient(version="1.41")
    yield client
    client.close()


@pytest.fixture(scope="session")
def tq_user():
    entry = users.create(USER, GROUP)
    yield entry
    users.remove(USER, GROUP)


@pytest.fixture(scope="session")
def tq_image(tq_api):
    image_id = images.build(tq_api, IMAGE)
    yield image_id
    images.remove(tq_api, IMAGE)


class Mom:
    """pbs_mom's mode (native or through cbatch), switched only when it changes."""

    def __init__(self, health: Path) -> None:
        self.health = health
        self.mode: bool | None = None

    def use(self, starter: bool) -> None:
        if self.mode != starter:
            torque.restart_mom(torque.mom_config(starter, self.health))
            self.mode = starter


@pytest.fixture(scope="session")
def mom(tq_image):
    torque.ensure_running()
    # a job queued while the node was briefly down (the health check) is not left waiting
    # for pbs_sched's default 10-minute cycle
    torque.qmgr("set server scheduler_iteration = 3")
    saved = torque.MOM_CONFIG.read_text()
    health = torque.PBS_HOME / "mom_priv" / "cbatch-health-test"
    mom = Mom(health)
    yield mom
    health.unlink(missing_ok=True)
    torque.restart_mom(saved)
    torque.qmgr("unset server scheduler_iteration")


@pytest.fixture(scope="session")
def node(mom, tq_image, tq_user):
    """cbatchd for the tier; pbs_mom runs every job through cbatch-starter."""
    n = torque.CbatchNode({IMAGE: tq_image}, IMAGE,
                          {"container": {"sweep_interval_s": 5}})
    n.write_health_check(mom.health)
    n.start()
    mom.use(True)
    yield n
    n.cleanup()


@pytest.fixture
def cbatch(node, mom):
    """Each test starts with pbs_mom on the starter and cbatchd up."""
    mom.use(True)
    if not node.alive():
        node.start()
    torque.wait_for(lambda: set(torque.node_states().values()) == {"free"}, 90,
                    "every node to be free")
    yield node


@pytest.fixture
def submit(tq_user):
    submitted: list[str] = []

    def _submit(script: str | None, *args: str, **kwargs) -> torque.Job:
        """qsub the script (on stdin; None: a path among args) as the test user."""
        job_id = torque.qsub(tq_user, script, *args, **kwargs)
        submitted.append(job_id)
        return torque.Job(job_id, tq_user)

    yield _submit
    for job_id in submitted:  # nothing left running for the next test
        subprocess.run([str(torque.BIN / "qdel"), "-W", "0", job_id], capture_output=True)
