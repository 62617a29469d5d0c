"""End-to-end fixtures: a test user, two local images, a real cbatchd, pbs_mom's harness."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import time
from pathlib import Path

import docker
import pytest

from cbatch.harness import momjob, momsim
from cbatch.harness.localnode import LocalNode as DaemonUnderTest
from tests.harness import images, users

# overridable, so two test runs on one machine do not remove each other's user
USER = os.environ.get("CBATCH_TEST_USER", "cbtest1")
GROUP = os.environ.get("CBATCH_TEST_GROUP", "cbtestg2")
_ids = itertools.count(1)


@dataclasses.dataclass
class Result:
    status: int
    out: str
    err: str
    job: momjob.MomJob


@pytest.fixture(scope="session")
def api():
    client = docker.APIClient(version="1.41")
    yield client
    # only this run's (its user's): other runs on the machine keep theirs
    for c in client.containers(all=True, filters={"label": f"cbatch.user={USER}"}):
        client.remove_container(c["Id"], force=True)
    client.close()


@pytest.fixture(scope="session")
def test_user():
    entry = users.create(USER, GROUP)
    yield entry
    users.remove(USER, GROUP)


@pytest.fixture(scope="session")
def image_ids(api):
    # alpha carries a setuid-root copy of id: the hardening must keep it from giving root
    suid = {"/usr/bin/suid-id": (Path("/usr/bin/id").read_bytes(), 0o4755)}
    ids = {"alpha": images.build(api, "alpha", suid), "beta": images.build(api, "beta")}
    yield ids
    for release in ids:
        images.remove(api, release)


@pytest.fixture(scope="session")
def site_dirs():
    ro, rw = f"/srv/cbatch-test-ro-{USER}", f"/srv/cbatch-test-rw-{USER}"
    for path in (ro, rw):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o1777)
    with open(f"{ro}/marker", "w") as f:
        f.write("site data\n")
    yield ro, rw
    shutil.rmtree(ro, ignore_errors=True)
    shutil.rmtree(rw, ignore_errors=True)


def make_daemon(image_ids, site_dirs, **extra) -> DaemonUnderTest:
    ro, rw = site_dirs
    settings = {"mounts": [{"path": ro, "read_only": True}, {"path": rw, "read_only": False},
                           {"path": "/srv/cbatch-absent", "optional": True}]}
    settings.update(extra)
    return DaemonUnderTest({"alpha": image_ids["alpha"], "beta": image_ids["beta"]}, "alpha",
                           settings)


@pytest.fixture(scope="session")
def daemon(image_ids, site_dirs, test_user):
    # Its periodic sweep would remove the containers other tests make by hand, or leave on
    # purpose for another daemon or `cbatch cleanup` to find: it sweeps only at its start.
    d = make_daemon(image_ids, site_dirs, container={"sweep_interval_s": 24 * 3600})
    d.start()
    yield d
    d.cleanup()


@pytest.fixture
def fresh_daemon(image_ids, site_dirs, test_user):
    """A daemon of the test's own, for tests that stop, kill or reconfigure it."""
    d = make_daemon(image_ids, site_dirs)
    yield d
    d.cleanup()


def job_spec(d: DaemonUnderTest, script: str, **kwargs) -> momsim.JobSpec:
    job_id = kwargs.pop("job_id", f"{next(_ids)}{int(time.time() * 1000) % 100000}.vm")
    return d.job_spec(USER, job_id, script, **kwargs)


@pytest.fixture
def submit(daemon):
    """Start a job through the harness; returns the running MomJob."""
    started = []

    def _submit(script: str, d: DaemonUnderTest | None = None, **kwargs) -> momjob.MomJob:
        job = momjob.MomJob(job_spec(d or daemon, script, **kwargs))
        started.append(job)
        return job

    yield _submit
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
        job.cleanup()


@pytest.fixture
def run(submit):
    """Run a job to its end; Result(status, .OU, .ER)."""

    def _run(script: str, timeout: float = 60, d: DaemonUnderTest | None = None,
             **kwargs) -> Result:
        job = submit(script, d=d, **kwargs)
        status = job.wait(timeout)
        out, err = job.output()
        return Result(status, out, err, job)

    return _run
